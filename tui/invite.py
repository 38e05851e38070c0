"""Inviting someone from the app: the code shown large, then who it is and the phrase
to compare, and a clear yes or no."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from hearth.errors import HearthError
from hearth.node import Node

__all__ = ["InviteScreen"]


class InviteScreen(ModalScreen[None]):
    """Runs one invite code through the group's relay until the person is in (or not)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("y", "answer(True)", "Let them in", show=False),
        Binding("n", "answer(False)", "No", show=False),
    ]
    DEFAULT_CSS = """
    #invite-code { text-style: bold; color: $accent; border: tall $accent;
                   content-align: center middle; height: 5; margin: 1 0; }
    #invite-question { display: none; height: auto; }
    """

    def __init__(self, node: Node, relay_url: str) -> None:
        super().__init__()
        self.node = node
        self.relay_url = relay_url
        self._answer: asyncio.Future[bool] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Invite someone", classes="dialog-title")
            yield Static("Opening an invite…", id="invite-code")
            yield Static(
                "Read this code to the new member, with the relay's address: "
                f"{self.relay_url}\nThey open Hearth and type both on its first screen "
                "(or run: hearth join CODE --relay "
                f"{self.relay_url} --name THEIR-NAME).",
                id="invite-how",
                markup=False,
            )
            yield Static("", id="invite-status")
            with Horizontal(id="invite-question", classes="dialog-buttons"):
                yield Button("Let them in", variant="primary", id="let-in")
                yield Button("No", variant="error", id="refuse")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.run_invite()

    @work(exclusive=True)
    async def run_invite(self) -> None:
        """The whole exchange; the screen says how it ended."""
        from hearth.invite_client import offer_invite  # networking loads only when inviting

        status = self.query_one("#invite-status", Static)
        try:
            result = await offer_invite(
                self.node,
                self.relay_url,
                timeout=600,
                show_code=self._show_code,
                show_phrase=self._show_phrase,
                approve=self._approve,
            )
        except HearthError as exc:
            status.update(f"The invite ended: {exc}")
            return
        if result.refused:
            status.update("Not let in. The code is used up.")
        else:
            status.update(f"{result.joined} is in. Their device fetches the group now.")
        self.app.refresh_bindings()

    def _show_code(self, code: str) -> None:
        self.query_one("#invite-code", Static).update("   ".join(code.upper().split("-")))

    def _show_phrase(self, phrase: str) -> None:
        self.query_one("#invite-status", Static).update(
            f"Check their screen shows the same words:  {phrase}"
        )

    async def _approve(self, name: str) -> bool:
        status = self.query_one("#invite-status", Static)
        status.update(f"{status.content}\n\n{name} wants to join the group. Let them in? (y or n)")
        self.query_one("#invite-question").display = True
        self._answer = asyncio.get_running_loop().create_future()
        answer = await self._answer
        self.query_one("#invite-question").display = False
        return answer

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id in ("let-in", "refuse"):
            self.action_answer(event.button.id == "let-in")
        elif event.button.id == "close":
            self.action_close()

    def action_answer(self, let_in: bool) -> None:
        """The inviter's answer, from a button or from y / n once the question is asked."""
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(let_in)

    def action_close(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(False)
        # This screen's invite only: the app's own sharing runs on (cancel_all stopped it,
        # and the app no longer received others' changes until restarted).
        self.workers.cancel_node(self)
        self.dismiss(None)
