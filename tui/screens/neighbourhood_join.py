"""Taking the group into a neighbourhood with the code another group's admin read out."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from hearth.errors import HearthError
from hearth.node.node import Node
from tui.wording import app_words

__all__ = ["NeighbourhoodJoinScreen"]


class NeighbourhoodJoinScreen(ModalScreen[None]):
    """Takes the group into a neighbourhood with the code its admin read out (what
    `hearth neighbourhood join CODE` does): the phrase to compare, then the outcome."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, node: Node, group_id: str, relay_url: str, code: str) -> None:
        super().__init__()
        self.node = node
        self.group_id = group_id
        self.relay_url = relay_url
        self.code = code

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Join a neighbourhood", classes="dialog-title")
            yield Static(
                f"Meeting the other group's admin through {self.relay_url}…",
                id="join-status",
                markup=False,
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.run_join()

    @work(exclusive=True)
    async def run_join(self) -> None:
        """The exchange, then the neighbourhood kept in the group's ledger."""
        from hearth.crypto import SigningKey
        from hearth.neighbourhood import participation
        from hearth.net.invite_code_client import accept_invite  # networking loads only now
        from hearth.protocol.invite_code import parse_code

        status = self.query_one("#join-status", Static)
        name = self.node.view(self.group_id).group_name

        def show_phrase(phrase: str) -> None:
            status.update(
                f"Check the other admin's screen shows:  {phrase}\n"
                f"Waiting for them to let '{name}' in…"
            )

        try:
            participation.require_admin(self.node, self.group_id, "join a neighbourhood")
            code = parse_code(self.code)
            key = SigningKey.generate(self.node.random_bytes)
            token = await accept_invite(
                self.relay_url, code, name=name, device=key, timeout=600, show_phrase=show_phrase
            )
            membership = participation.join(self.node, self.group_id, token, key)
        except HearthError as exc:
            status.update(f"Not joined: {app_words(str(exc))}")
            return
        status.update(f"'{name}' joined the neighbourhood '{membership.name}'.")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "close":
            self.action_close()

    def action_close(self) -> None:
        self.workers.cancel_node(self)
        self.dismiss(None)
