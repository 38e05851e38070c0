"""The Needs and Promises tabs: noting needs and closing them, promises from proposed to
done."""

from __future__ import annotations

from functools import partial

from hearth.ledger.model import CommitmentStatus
from hearth.values import parse_date, parse_quantity
from tui.flows.base import Done, FlowBase
from tui.panes import CommitmentsPane, NeedsPane
from tui.screens.confirm import ConfirmScreen
from tui.screens.form import Choice, Field, Values

__all__ = ["PromiseFlows"]


class PromiseFlows(FlowBase):
    """The keys of the Needs and Promises tabs."""

    def action_add_need(self) -> None:
        self.ask(
            "Add a need",
            [
                Field("what", "What is needed", placeholder="e.g. seed trays"),
                Field("quantity", "How many (optional)"),
                Field("unit", "Unit (optional)"),
                Field("by", "By when (optional)", placeholder="2026-12-24, tomorrow or +3d"),
            ],
            self._add_need,
        )

    def _add_need(self, v: Values) -> Done:
        quantity = parse_quantity(v["quantity"]) if v["quantity"] else None
        by = parse_date(v["by"], now_ms=self.node.clock.now_ms()) if v["by"] else None
        return self.saved(
            lambda ledger: ledger.add_need(v["what"], quantity=quantity, unit=v["unit"], by=by),
            f"Noted the need for {v['what']}.",
        )

    def action_add_promise(self) -> None:
        members = self.members()  # either side may be me, or neither
        resources = [(r.name, r.id) for r in self.node.view(self.group_id).resources()]
        self.ask(
            "New promise",
            [
                Field("what", "What is promised", placeholder="e.g. lend the ladder"),
                Choice("giver", "Who gives", members),
                Choice("receiver", "To whom", members),
                # As `commitment add --resource`: once done, the gift is recorded too.
                Choice(
                    "resource", "Of the group's resources (optional)", resources, required=False
                ),
                Field("quantity", "How many (optional)"),
                Field("due", "By when (optional)", placeholder="2026-12-24, tomorrow or +3d"),
            ],
            self._add_promise,
        )

    def _add_promise(self, v: Values) -> Done:
        quantity = parse_quantity(v["quantity"]) if v["quantity"] else None
        due = parse_date(v["due"], now_ms=self.node.clock.now_ms()) if v["due"] else None
        return self.saved(
            lambda ledger: ledger.add_commitment(
                v["what"],
                giver=v["giver"],
                receiver=v["receiver"],
                resource=v["resource"],
                quantity=quantity,
                due=due,
            ),
            f"Recorded the promise: {v['what']}.",
        )

    def action_filter(self) -> None:
        pane: NeedsPane | CommitmentsPane
        if self.tab() == "needs":
            pane = self.query_one(NeedsPane)
        elif self.tab() == "promises":
            pane = self.query_one(CommitmentsPane)
        else:
            return
        pane.filter = pane.FILTERS[(pane.FILTERS.index(pane.filter) + 1) % len(pane.FILTERS)]
        pane.show(self.snapshot())

    def close_need(self) -> None:
        """Close the need under the cursor."""
        need_id = self.selected("need-table")
        if need_id is None:
            return
        what = self.node.view(self.group_id).need(need_id).what
        self.attempt_edit(lambda ledger: ledger.close_need(need_id), f"Closed the need for {what}.")

    def promise_to(self, status: CommitmentStatus, word: str) -> None:
        """Move the promise under the cursor on (a cancel asks first)."""
        if self.tab() != "promises":
            return
        commitment_id = self.selected("promise-table")
        if commitment_id is None:
            self.notify("Pick a promise first (arrow keys).", severity="warning")
            return
        what = self.node.view(self.group_id).commitment(commitment_id).what
        act = partial(self._set_promise, commitment_id, status, f"{word}: {what}.")
        if status is CommitmentStatus.CANCELLED:
            self.push_screen(ConfirmScreen(f"Cancel the promise '{what}'?", yes="Cancel it"), act)
        else:
            act(True)

    def _set_promise(
        self, commitment_id: str, status: CommitmentStatus, text: str, yes: bool | None
    ) -> None:
        if yes:
            self.attempt_edit(lambda ledger: ledger.change_commitment(commitment_id, status), text)
