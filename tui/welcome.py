"""The first run: make who you are, then start a group or join one."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from hearth.errors import HearthError
from hearth.identity import create_identity, has_identity
from hearth.invite import decode_token
from hearth.node import open_node

__all__ = ["WelcomeApp"]

INTRO = """\
Welcome to Hearth.

Hearth keeps a list of what your group shares — tools, food, rooms, skills — and who has
promised what to whom. It lives on this computer and works without the internet; when
members' devices can reach each other, their changes come together.
"""


class WelcomeApp(App[bool]):
    """Creates the identity if there is none, then a first group; exits ``True`` when the
    node is ready to open."""

    TITLE = "Hearth"
    CSS = """
    Vertical { padding: 1 2; max-width: 90; }
    Label.step { text-style: bold; margin-top: 1; }
    Horizontal { height: auto; margin-top: 1; }
    Button { margin-right: 2; }
    #problem { color: $error; height: auto; }
    """
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
            yield Input(placeholder="…or the join text a member gave you", id="token")
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

    def on_button_pressed(self, event: Button.Pressed) -> None:
        try:
            self._ensure_identity()
            with open_node(self.home) as node:
                if event.button.id == "create":
                    node.create_group(self.query_one("#group", Input).value)
                else:
                    node.join_with_token(decode_token(self.query_one("#token", Input).value))
        except HearthError as exc:
            self.query_one("#problem", Static).update(str(exc))
            return
        self.exit(True)

    def _ensure_identity(self) -> None:
        if not has_identity(self.home):
            create_identity(self.home, name=self.query_one("#name", Input).value)
