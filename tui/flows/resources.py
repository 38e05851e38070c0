"""The Resources tab: adding, editing, lending, returning, giving, using up, removing."""

from __future__ import annotations

from functools import partial

from hearth.ledger.history import history
from hearth.ledger.ledger import Ledger
from hearth.ledger.model import Kind
from hearth.ledger.present import describe_resource
from hearth.values import format_time, parse_date, parse_quantity
from tui.flows.base import Done, FlowBase
from tui.panes import ResourcesPane
from tui.screens.confirm import ConfirmScreen
from tui.screens.detail import DetailScreen
from tui.screens.form import Choice, Field, Values

__all__ = ["ResourceFlows"]

_SHARING = [("no: only this group sees it", "no"), ("yes: it can be offered", "yes")]


class ResourceFlows(FlowBase):
    """The keys of the Resources tab."""

    def resource_under_cursor(self) -> str | None:
        """The resource picked on the Resources tab; says so if there is none."""
        if self.tab() != "resources":
            return None
        resource_id = self.selected("resource-table")
        if resource_id is None:
            self.notify("Pick a resource first (arrow keys).", severity="warning")
        return resource_id

    def action_add_resource(self) -> None:
        self.ask(
            "Add a resource",
            [
                Field("name", "Name", placeholder="e.g. Ladder"),
                Choice("kind", "Kind", [(k.value, k.value) for k in Kind]),
                Field("quantity", "How many", value="1"),
                Field("unit", "Unit (optional)", placeholder="e.g. bags, kg"),
                Field("location", "Where it is kept (optional)"),
                Field("note", "Note (optional)"),
            ],
            self._add_resource,
        )

    def _add_resource(self, v: Values) -> Done:
        quantity = parse_quantity(v["quantity"] or "1", allow_zero=True)
        return self.saved(
            lambda ledger: ledger.add_resource(
                v["name"],
                kind=Kind(v["kind"]),
                quantity=quantity,
                unit=v["unit"],
                location=v["location"],
                note=v["note"],
            ),
            f"Added {v['name']}.",
        )

    def show_resource(self) -> None:
        """A resource's details and its history."""
        resource_id = self.resource_under_cursor()
        if resource_id is None:
            return
        view = self.node.view(self.group_id)
        lines = [describe_resource(view, view.resource(resource_id)), "", "History:"]
        for item in history(view, resource=resource_id):
            lines.append(f"  {format_time(item.at)}  {view.member_name(item.by)} {item.what}")
        self.push_screen(DetailScreen("\n".join(lines)))

    def action_edit(self) -> None:
        resource_id = self.resource_under_cursor()
        if resource_id is None:
            return
        r = self.node.view(self.group_id).resource(resource_id)
        self.ask(
            f"Edit {r.name}",
            [
                Field("name", "Name", value=r.name),
                Choice("kind", "Kind", [(k.value, k.value) for k in Kind], r.kind.value),
                Field("unit", "Unit", value=r.unit),
                Field("location", "Where it is kept", value=r.location),
                Choice("keeper", "Who looks after it", self.members(), r.keeper),
                Choice(
                    "shareable",
                    "Shareable with neighbour groups",
                    _SHARING,
                    "yes" if r.shareable else "no",
                ),
                Field("note", "Note", value=r.note),
            ],
            partial(self._edit_resource, resource_id),
        )

    def _edit_resource(self, resource_id: str, v: Values) -> Done:
        return self.saved(
            lambda ledger: ledger.edit_resource(
                resource_id,
                name=v["name"],
                kind=Kind(v["kind"]),
                unit=v["unit"],
                location=v["location"],
                keeper=v["keeper"],
                shareable=v["shareable"] == "yes",
                note=v["note"],
            ),
            f"Saved {v['name']}.",
        )

    def action_lend(self) -> None:
        resource_id = self.resource_under_cursor()
        if resource_id is None:
            return
        resource = self.node.view(self.group_id).resource(resource_id)
        # As the CLI: anyone but the thing's keeper (who has it whenever it is not lent),
        # the member too, taking a thing someone else keeps.
        me = self.node.identity.member_id
        borrowers = [
            (f"{label} (me: I take it)" if member == me else label, member)
            for label, member in self.members()
            if member != resource.keeper
        ]
        self.ask(
            f"Lend {resource.name}",
            [
                Choice("to", "To whom", borrowers),
                Field("until", "Until (optional)", placeholder="2026-12-24, tomorrow or +3d"),
            ],
            partial(self._lend, resource_id, resource.name, resource.keeper),
            ok="Lend",
        )

    def _lend(self, resource_id: str, name: str, keeper: str, v: Values) -> Done:
        until = parse_date(v["until"], now_ms=self.node.clock.now_ms()) if v["until"] else None
        keeps = self.node.view(self.group_id).member_name(keeper)
        taking = v["to"] == self.node.identity.member_id
        return self.saved(
            lambda ledger: ledger.lend(resource_id, to=v["to"], until=until),
            f"You took {name} ({keeps} keeps it)." if taking else f"Lent {name}.",
        )

    def action_return(self) -> None:
        resource_id = self.resource_under_cursor()
        if resource_id is None:
            return
        name = self.node.view(self.group_id).resource(resource_id).name
        self.attempt_edit(lambda ledger: ledger.return_(resource_id), f"{name} is back.")

    def action_produce(self) -> None:
        self._quantity_change("produce", "Added to {name}.")

    def action_consume(self) -> None:
        self._quantity_change("consume", "Used up some {name}.")

    def _quantity_change(self, verb: str, done: str) -> None:
        resource_id = self.resource_under_cursor()
        if resource_id is None:
            return
        r = self.node.view(self.group_id).resource(resource_id)
        title = "Add to" if verb == "produce" else "Use up some of"
        self.ask(
            f"{title} {r.name}",
            [Field("quantity", f"How many {r.unit}".strip()), Field("note", "Note (optional)")],
            partial(self._change_quantity, resource_id, verb, done.format(name=r.name)),
        )

    def _change_quantity(self, resource_id: str, verb: str, done: str, v: Values) -> Done:
        quantity = parse_quantity(v["quantity"])
        operation = {"produce": Ledger.produce, "consume": Ledger.consume}[verb]
        return self.saved(
            lambda ledger: operation(ledger, resource_id, quantity, note=v["note"]), done
        )

    def action_give(self) -> None:
        resource_id = self.resource_under_cursor()
        if resource_id is None:
            return
        name = self.node.view(self.group_id).resource(resource_id).name
        self.ask(
            f"Give {name}",
            [self.member_choice("to", "To whom"), Field("quantity", "How many", value="1")],
            partial(self._give, resource_id, name),
            ok="Give",
        )

    def _give(self, resource_id: str, name: str, v: Values) -> Done:
        quantity = parse_quantity(v["quantity"] or "1")
        return self.saved(
            lambda ledger: ledger.give(resource_id, to=v["to"], quantity=quantity),
            f"Gave {name}.",
        )

    def remove_resource(self) -> None:
        """Remove the resource under the cursor, after asking."""
        resource_id = self.resource_under_cursor()
        if resource_id is None:
            return
        name = self.node.view(self.group_id).resource(resource_id).name
        self.push_screen(
            ConfirmScreen(
                f"Remove {name}?",
                "It disappears from everyone's list; its history is kept.",
                yes="Remove",
            ),
            partial(self._remove_resource, resource_id, name),
        )

    def _remove_resource(self, resource_id: str, name: str, yes: bool | None) -> None:
        if yes:
            self.attempt_edit(
                lambda ledger: ledger.remove_resource(resource_id), f"Removed {name}."
            )

    def action_search(self) -> None:
        if self.tab() == "resources":
            self.query_one("#resource-search").focus()

    def action_kind_filter(self) -> None:
        if self.tab() == "resources":
            pane = self.query_one(ResourcesPane)
            kinds = ResourcesPane.KINDS
            pane.kind_filter = kinds[(kinds.index(pane.kind_filter) + 1) % len(kinds)]
            pane.show(self.snapshot())

    def action_sort(self) -> None:
        if self.tab() == "resources":
            pane = self.query_one(ResourcesPane)
            sorts = ResourcesPane.SORTS
            pane.sort = sorts[(sorts.index(pane.sort) + 1) % len(sorts)]
            pane.show(self.snapshot())
