"""What every flow of the app uses: the node, the group shown, making a change and
saying how it went."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from textual.app import App
from textual.widgets import DataTable, TabbedContent

from hearth.errors import HearthError
from hearth.ledger.ledger import Ledger
from hearth.node.node import Node, open_node
from tui.panes import Snapshot, selected_key
from tui.screens.form import Choice, Field, FormScreen, Values

__all__ = ["Done", "FlowBase"]

ResultT = TypeVar("ResultT")


@dataclass(frozen=True, slots=True)
class Done:
    """What a finished flow says to the member (names in it shown as written)."""

    text: str


class FlowBase(App[None]):
    """The app as its flows see it: a node, the group shown, and the helpers below.

    :class:`tui.app.HearthApp` sets ``node`` and ``group_id`` and draws (``redraw``,
    ``snapshot``); the flows only act and say what they did.
    """

    node: Node
    group_id: str

    def redraw(self) -> None:
        """Draw the tab in view from the ledger as it is now (the app's)."""
        raise NotImplementedError

    def snapshot(self) -> Snapshot:
        """The state every pane draws from (the app's)."""
        raise NotImplementedError

    # --- changing the group ---------------------------------------------------------------

    def edit(self, edit: Callable[[Ledger], object]) -> None:
        """Make one change to the ledger (raises :class:`HearthError` if refused)."""
        with self.node.change(self.group_id) as ledger:
            edit(ledger)

    def saved(self, edit: Callable[[Ledger], object], text: str) -> Done:
        """Make one change from a form: a refusal stays in the form (raised)."""
        self.edit(edit)
        return Done(text)

    def attempt(self, act: Callable[[], object], text: str) -> bool:
        """Do something to the group from a key or a confirmation (no form to show a
        refusal in): a refusal is shown in plain words."""
        try:
            act()
        except HearthError as exc:
            self.notify(str(exc), title="Not done", severity="error", timeout=8, markup=False)
            return False
        self.done(Done(text))
        return True

    def attempt_edit(self, edit: Callable[[Ledger], object], text: str) -> bool:
        """:meth:`attempt` for one change to the ledger."""
        return self.attempt(lambda: self.edit(edit), text)

    def done(self, result: Done | None) -> None:
        """Say what a flow did, and draw it (``None``: it was cancelled)."""
        if result is None:
            return
        self.notify(result.text, markup=False)  # names in it are as written
        self.redraw()

    def in_background(self, act: Callable[[Node], ResultT]) -> Awaitable[ResultT]:
        """Run ``act`` in a worker thread, on a node of its own over this home (a second
        connection to the store, as another ``hearth`` process would be), so that the
        screen stays live while it reads or writes much. What it commits reaches this
        app's node as any other process's does (:mod:`tui.watch`)."""
        node = self.node

        def run() -> ResultT:
            with open_node(
                node.home, clock=node.clock, new_id=node.new_id, random_bytes=node.random_bytes
            ) as elsewhere:
                return act(elsewhere)

        return asyncio.to_thread(run)

    def ask(
        self,
        title: str,
        fields: list[Field | Choice],
        submit: Callable[[Values], Done | Awaitable[Done]],
        ok: str = "Save",
    ) -> None:
        """Show a form whose Save does ``submit``; what it did is said when it closes."""
        self.push_screen(FormScreen(title, fields, submit, ok), self.done)

    # --- what is shown ----------------------------------------------------------------------

    def action_show_tab(self, tab: str) -> None:
        """Bring a tab into view."""
        self.query_one("#tabs", TabbedContent).active = tab

    def tab(self) -> str:
        """The tab in view."""
        return self.query_one("#tabs", TabbedContent).active or "overview"

    def selected(self, table_id: str) -> str | None:
        """The entry id under the cursor of a table."""
        return selected_key(self.query_one(f"#{table_id}", DataTable))

    def members(self, *, others: bool = False) -> list[tuple[str, str]]:
        """(name, id) of the group's members (``others``: all but me)."""
        me = self.node.identity.member_id
        return [
            (m.name, m.id)
            for m in self.node.view(self.group_id).members()
            if not (others and m.id == me)
        ]

    def member_choice(self, key: str, label: str) -> Choice:
        """A pick among the other members, blank until the member picks one."""
        return Choice(key, label, self.members(others=True))
