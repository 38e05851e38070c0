"""The first run: make who you are, then start a group or join one."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from hearth.errors import HearthError, UsageError
from hearth.ledger.ledger import check_relay_url
from hearth.node.identity import create_identity, has_identity
from hearth.node.node import open_node
from hearth.protocol.invite_code import parse_code
from hearth.protocol.invite_token import decode_token
from tui.wording import app_words

__all__ = ["WelcomeApp"]

INTRO = """\
Welcome to Hearth.

Hearth keeps a list of what your group shares — tools, food, rooms, skills — and who \
has promised what to whom. It lives on this computer and works without the internet; \
when members' devices can reach each other, their changes come together.
"""


class WelcomeApp(App[bool]):
    """Creates the identity if there is none, then a first group; exits ``True`` when the
    node is ready to open."""

    TITLE = "Hearth"
    CSS_PATH = "welcome.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "quit", "Leave")]

    def __init__(self, home: Path) -> None:
        super().__init__()
        self.home = home

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(INTRO)
            yield Label("Your name, as the group will see it", classes="step", id="name-label")
            yield Input(placeholder="e.g. Ada", id="name")
            yield Label("Then: start a new group, or join one", classes="step")
            yield Input(placeholder="A new group's name, e.g. Elm Street Tools", id="group")
            yield Input(
                placeholder="…or the invite code a member read out (7-orchard-lantern-cobalt)",
                id="token",
            )
            yield Input(
                placeholder="the relay's address (ws://…): given with the code, or your new "
                "group's",
                id="relay",
            )
            with Horizontal():
                yield Button("Start the group", variant="primary", id="create")
                yield Button("Join", id="join")
            yield Static(id="problem")

    def on_mount(self) -> None:
        if has_identity(self.home):
            for widget_id in ("#name-label", "#name"):
                self.query_one(widget_id).display = False
            self.query_one("#group", Input).focus()
        else:
            self.query_one("#name", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter moves on as a person typing expects: from the name to the group, from a
        group's name to starting it, from a code to its relay, from the relay to joining."""
        field = event.input.id
        if field == "name":
            self.query_one("#group", Input).focus()
        elif field == "group" and event.value.strip():
            self.query_one("#create", Button).press()
        elif field == "group":
            self.query_one("#token", Input).focus()
        elif field == "token" and not self.query_one("#relay", Input).value.strip():
            self.query_one("#relay", Input).focus()
        else:
            self.query_one("#join", Button).press()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        problem = self.query_one("#problem", Static)
        try:
            self._ensure_identity()
            if event.button.id == "create":
                relay = self.query_one("#relay", Input).value.strip()
                url = check_relay_url(relay) if relay else None  # checked before anything
                with open_node(self.home) as node:
                    node.create_group(self.query_one("#group", Input).value)
                    if url is not None:  # so that invites can be codes from the start
                        with node.change() as ledger:
                            ledger.add_relay(url)
            else:
                text = self.query_one("#token", Input).value.strip()
                if not text.startswith("hearth-token-"):
                    problem.update("Meeting the inviter…")
                    text = await self._token_for_code(text)
                with open_node(self.home) as node:
                    node.join_with_token(decode_token(text))
        except HearthError as exc:
            problem.update(app_words(str(exc)))
            return
        self.exit(True)

    async def _token_for_code(self, text: str) -> str:
        """Run the invite code with the inviter; the token they send once they approve."""
        from hearth.net.invite_code_client import accept_invite  # networking loads only for this

        code = parse_code(text)
        relay = self.query_one("#relay", Input).value.strip()
        if not relay:
            raise UsageError("Add the relay the inviter gave you with the code (ws://…).")
        relay = check_relay_url(relay)
        with open_node(self.home) as node:
            name, device = node.identity.name, node.identity.device_key

        def show_phrase(phrase: str) -> None:
            self.query_one("#problem", Static).update(
                f"Check the inviter's screen shows:  {phrase}\nWaiting for them to let you in…"
            )

        return await accept_invite(
            relay, code, name=name, device=device, timeout=600, show_phrase=show_phrase
        )

    def _ensure_identity(self) -> None:
        if not has_identity(self.home):
            create_identity(self.home, name=self.query_one("#name", Input).value)
