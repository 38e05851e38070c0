"""A form of a few fields that does what it is for on Save and returns what that gave."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeAlias, TypeVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from hearth.errors import HearthError
from tui.wording import app_words

__all__ = ["Choice", "Field", "FormScreen", "Values"]

Values: TypeAlias = dict[str, str]
"""What was typed or picked in a form, by field key (text stripped; a blank pick is "")."""

ResultT = TypeVar("ResultT")


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


class FormScreen(ModalScreen[ResultT | None], Generic[ResultT]):
    """Asks for a few values, hands them to ``submit`` on Save, and dismisses with what
    it returned (``None`` if cancelled).

    ``submit`` does what the form is for; when it refuses (a :class:`HearthError`: a bad
    quantity, a date it cannot read) the reason shows in the form, which stays open with
    everything typed so far. A ``submit`` that may take long (reading a large file)
    returns an awaitable instead, for work done in a worker thread: the form waits for it
    (``saving`` is true meanwhile, and a second Save is ignored), then closes or says why not.
    """

    CSS_PATH = "form.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        fields: Sequence[Field | Choice],
        submit: Callable[[Values], ResultT | Awaitable[ResultT]],
        ok: str = "Save",
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields
        self.ok = ok
        self.submit = submit
        self.saving = False

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
            self.action_cancel()

    def on_input_submitted(self) -> None:
        self._submit()

    def action_cancel(self) -> None:
        if not self.saving:  # what is being saved finishes, and is said
            self.dismiss(None)

    def _submit(self) -> None:
        if self.saving:
            return
        values: Values = {}
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
        try:
            result = self.submit(values)
        except HearthError as exc:
            self.show_error(str(exc))
            return
        if inspect.isawaitable(result):
            self.saving = True
            self._wait_for(result)
            return
        self.dismiss(result)

    @work(exclusive=True, group="form-save")
    async def _wait_for(self, pending: Awaitable[ResultT]) -> None:
        """The end of a Save that runs elsewhere: close with its result, or say why not."""
        ok = self.query_one("#ok", Button)
        ok.disabled = True
        try:
            result = await pending
        except HearthError as exc:
            self.show_error(str(exc))
            return
        finally:
            ok.disabled = False
            self.saving = False
        self.dismiss(result)

    def show_error(self, text: str) -> None:
        """Say in the form why it cannot be saved yet."""
        error = self.query_one("#form-error", Static)
        error.update(app_words(text))
        error.display = True
