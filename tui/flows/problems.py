"""The Problems tab: the ordinary change that settles each problem, offered."""

from __future__ import annotations

from functools import partial

from textual.widgets import DataTable

from hearth.ledger.clashes import FieldClash, field_clashes
from hearth.ledger.conflicts import find_conflicts
from hearth.ledger.model import Conflict, Kind
from hearth.ledger.view import LedgerView
from hearth.values import parse_quantity
from tui.flows.base import Done, FlowBase
from tui.panes import CommitmentsPane
from tui.screens.form import Choice, Field, Values

__all__ = ["ProblemFlows"]


class ProblemFlows(FlowBase):
    """The key of the Problems tab."""

    def action_sort_out(self) -> None:
        """Offer the ordinary change that settles the problem under the cursor."""
        conflict_id = self.selected("problem-table")
        view = self.node.view(self.group_id)
        found = [c for c in find_conflicts(view) if c.id == conflict_id]
        if not found:
            return
        conflict = found[0]
        resource_id = conflict.entries[0]
        if conflict.kind == "double-lend":
            r = view.resource(resource_id)
            self.ask(
                f"Who does not have {r.name} any more?",
                [
                    Choice(
                        "borrower",
                        "Record a return from",
                        [(view.member_name(m), m) for m in r.lent_to],
                    )
                ],
                partial(self._record_return, resource_id, r.name),
                ok="Record the return",
            )
        elif conflict.kind == "field-clash":
            self._settle_field_clash(view, resource_id, conflict.entries[1:])
        elif conflict.kind == "overdrawn":
            r = view.resource(resource_id)
            self.ask(
                f"How much {r.name} is really there?",
                [Field("quantity", f"Count ({r.unit})".replace(" ()", ""), value="0")],
                partial(self._correct_count, resource_id, r.name),
                ok="Correct it",
            )
        else:  # promises: decide among them on the Promises tab
            self._show_promises_of(conflict)

    def _record_return(self, resource_id: str, name: str, v: Values) -> Done:
        return self.saved(
            lambda ledger: ledger.return_(resource_id, borrower=v["borrower"]),
            f"Recorded the return of {name}.",
        )

    def _correct_count(self, resource_id: str, name: str, v: Values) -> Done:
        quantity = parse_quantity(v["quantity"], allow_zero=True)
        return self.saved(
            lambda ledger: ledger.edit_resource(resource_id, quantity=quantity),
            f"Corrected {name}.",
        )

    def _show_promises_of(self, conflict: Conflict) -> None:
        self.action_show_tab("promises")
        promises = self.query_one(CommitmentsPane)
        promises.filter = "open"
        promises.show(self.snapshot())
        table = self.query_one("#promise-table", DataTable)
        wanted = [e for e in conflict.entries if e in table.rows]
        if wanted:
            table.move_cursor(row=table.get_row_index(wanted[0]))
            table.focus()
        self.notify(conflict.advice)

    def _settle_field_clash(
        self, view: LedgerView, resource_id: str, edits: tuple[str, ...]
    ) -> None:
        """Pick which of the values set at the same time is right; setting it settles the
        clash (what `hearth resource edit ID --FIELD VALUE` does)."""
        r = view.resource(resource_id)
        clash = next(
            c
            for c in field_clashes(view.tables["resources"][resource_id])
            if tuple(rival.edit for rival in c.rivals) == edits
        )
        options: dict[str, str] = {}
        for rival in clash.rivals:
            options.setdefault(
                rival.value,
                f"{_shown(view, clash, rival.value)} (set by {view.member_name(rival.by)})",
            )
        self.ask(
            f"Which {clash.field} of {r.name} is right?",
            [Choice("value", clash.field.capitalize(), [(t, v) for v, t in options.items()])],
            partial(self._set_clashing_field, view, resource_id, r.name, clash),
            ok="Set it",
        )

    def _set_clashing_field(
        self, view: LedgerView, resource_id: str, name: str, clash: FieldClash, v: Values
    ) -> Done:
        value = _typed(clash.field, v["value"])
        return self.saved(
            lambda ledger: ledger.edit_resource(
                resource_id,
                **{clash.field: value},  # type: ignore[arg-type]
            ),
            f"{name}: {clash.field} set to {_shown(view, clash, v['value'])}.",
        )


def _shown(view: LedgerView, clash: FieldClash, value: str) -> str:
    """A clashing value in words: a keeper by name, nothing as "(nothing)"."""
    return view.member_name(value) if clash.field == "keeper" else value or "(nothing)"


def _typed(field: str, value: str) -> object:
    """A picked value as the ledger takes it for ``field``."""
    if field == "kind":
        return Kind(value)
    if field == "shareable":
        return value == "yes"
    return value
