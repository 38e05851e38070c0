"""Small dialogs: a form of a few fields, and a question that needs a yes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from hearth.errors import HearthError
from tui.wording import app_words

__all__ = ["Choice", "ConfirmScreen", "Field", "FormScreen"]


@dataclass(frozen=True, slots=True)
class Field:
    """A text field: its key in the result, its label, and what it starts with."""

    key: str
    label: str
    value: str = ""
    placeholder: str = ""


@dataclass(frozen=True, slots=True)
class Choice:
    """A pick from a list: (shown text, value) pairs. With no ``value`` it starts blank,
    and must be picked (``required``) before the form saves: nothing is chosen for the
    member without their seeing it."""

    key: str
    label: str
    options: Sequence[tuple[str, str]]
    value: str | None = None
    required: bool = True


class FormScreen(ModalScreen[dict[str, str] | None]):
    """Asks for a few values; dismisses with them, or ``None`` if cancelled.

    ``submit`` does what the form is for; when it refuses (a :class:`HearthError`: a bad
    quantity, a date it cannot read) the reason shows in the form, which stays open with
    everything typed so far.
    """

    DEFAULT_CSS = """
    FormScreen .form-error { display: none; height: auto; margin-top: 1; color: $error; }
    FormScreen Label { width: 1fr; }  /* a long label wraps instead of being cut off */
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        fields: Sequence[Field | Choice],
        ok: str = "Save",
        submit: Callable[[dict[str, str]], object] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields
        self.ok = ok
        self.submit = submit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            for f in self.fields:
                yield Label(f.label)
                if isinstance(f, Choice):
                    # The value given here, not set after: set before the Select is
                    # mounted, it was kept but the Select showed "Select", as if blank.
                    yield Select(
                        list(f.options),
                        id=f"field-{f.key}",
                        allow_blank=f.value is None,
                        value=Select.NULL if f.value is None else f.value,
                        compact=True,
                    )
                else:
                    yield Input(
                        value=f.value, placeholder=f.placeholder, id=f"field-{f.key}", compact=True
                    )
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok, variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self._submit()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        values: dict[str, str] = {}
        for f in self.fields:
            if isinstance(f, Choice):
                select = self.query_one(f"#field-{f.key}", Select)
                values[f.key] = "" if select.is_blank() else str(select.value)
            else:
                values[f.key] = self.query_one(f"#field-{f.key}", Input).value.strip()
        for f in self.fields:
            if isinstance(f, Choice) and f.required and not values[f.key]:
                self.show_error(f"Choose {f.label[0].lower()}{f.label[1:]}.")
                self.query_one(f"#field-{f.key}", Select).focus()
                return
        if self.submit is not None:
            try:
                self.submit(values)
            except HearthError as exc:
                self.show_error(str(exc))
                return
        self.dismiss(values)

    def show_error(self, text: str) -> None:
        """Say in the form why it cannot be saved yet."""
        error = self.query_one("#form-error", Static)
        error.update(app_words(text))
        error.display = True


class ConfirmScreen(ModalScreen[bool]):
    """A question with a plain explanation; dismisses ``True`` only on a clear yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "no", "No"),
        Binding("y", "yes", "Yes"),
    ]

    def __init__(self, question: str, explanation: str = "", yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.explanation = explanation
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title", markup=False)
            if self.explanation:
                yield Static(self.explanation, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button("No", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)
