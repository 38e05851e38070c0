"""Inviting someone from the app: the code shown large, then who it is and the phrase
to compare, and a clear yes or no."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from hearth.errors import HearthError
from hearth.node.node import Node
from hearth.protocol.invite_code import JoinerIntroduced
from tui.wording import app_words

__all__ = ["InviteScreen", "InviteWords", "device_words"]


@dataclass(frozen=True)
class InviteWords:
    """What an invite screen says: its title, how the other side uses the code, the
    question once they are known, and what it says when they are in."""

    title: str
    how: str
    question: Callable[[str], str]
    done: Callable[[str], str]


def _member_words(relay_url: str) -> InviteWords:
    return InviteWords(
        "Invite someone",
        f"Read this code to the new member, with the relay's address: {relay_url}\n"
        "They open Hearth and type both on its first screen (or run: hearth join CODE "
        f"--relay {relay_url} --name THEIR-NAME).",
        lambda name: f"{name} wants to join the group. Let them in? (y or n)",
        lambda name: f"{name} is in. Their device fetches the group now.",
    )


def device_words(relay_url: str) -> InviteWords:
    """What the invite screen says when it adds another device of this member."""
    return InviteWords(
        "Add a device",
        f"On your new device, open Hearth and type this code and the relay's address: "
        f"{relay_url} (or run: hearth join CODE --relay {relay_url}).",
        lambda name: f"The device '{name}' wants to write as you. Let it? (y or n)",
        lambda name: f"'{name}' is now one of your devices. It fetches the group now.",
    )


class InviteScreen(ModalScreen[None]):
    """Runs one invite code through the group's relay until the person is in (or not)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("y", "answer(True)", "Let them in", show=False),
        Binding("n", "answer(False)", "No", show=False),
    ]
    CSS_PATH = "invite.tcss"

    def __init__(
        self,
        node: Node,
        relay_url: str,
        *,
        words: InviteWords | None = None,
        make_token: Callable[[JoinerIntroduced], str] | None = None,
    ) -> None:
        """``make_token`` records the invite and gives what is sealed to the joiner (a
        new member's join token unless given: a neighbourhood's for another group)."""
        super().__init__()
        self.node = node
        self.relay_url = relay_url
        self.words = words or _member_words(relay_url)
        self.make_token = make_token
        self._answer: asyncio.Future[bool] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.words.title, classes="dialog-title", markup=False)
            yield Static("Opening an invite…", id="invite-code")
            yield Static(self.words.how, id="invite-how", markup=False)
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
        from hearth.net.invite_code_client import (
            offer_invite,  # networking loads only when inviting
        )

        status = self.query_one("#invite-status", Static)
        try:
            result = await offer_invite(
                self.node,
                self.relay_url,
                timeout=600,
                show_code=self._show_code,
                show_phrase=self._show_phrase,
                approve=self._approve,
                make_token=self.make_token,
            )
        except HearthError as exc:
            status.update(f"The invite ended: {app_words(str(exc))}")
            return
        if result.refused:
            status.update("Not let in. The code is used up.")
        else:
            status.update(self.words.done(result.joined))
        self.app.refresh_bindings()

    def _show_code(self, code: str) -> None:
        self.query_one("#invite-code", Static).update("   ".join(code.upper().split("-")))

    def _show_phrase(self, phrase: str) -> None:
        self.query_one("#invite-status", Static).update(
            f"Check their screen shows the same words:  {phrase}"
        )

    async def _approve(self, name: str) -> bool:
        status = self.query_one("#invite-status", Static)
        status.update(f"{status.content}\n\n{self.words.question(name)}")
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
