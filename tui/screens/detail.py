"""Text to read, in a dialog: a resource's details, a token, a report."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.wording import app_words

__all__ = ["DetailScreen"]


class DetailScreen(ModalScreen[None]):
    """A resource's details and its history."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "app.pop_screen", "Close")]

    def __init__(self, text: str, *, markup: bool = True) -> None:
        """``markup=False`` for text from elsewhere (a relay's error), shown as written."""
        super().__init__()
        self.text = app_words(text)
        self.markup = markup

    def compose(self) -> ComposeResult:
        yield Static(self.text, classes="dialog", id="detail", markup=self.markup)
