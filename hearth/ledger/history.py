"""The group's history, in words: who did what, when."""

from __future__ import annotations

from decimal import Decimal

from hearth.ledger import clashes
from hearth.ledger.model import STARTING_STOCK, Action, CommitmentStatus, HistoryItem
from hearth.ledger.view import LedgerView
from hearth.values import format_date, format_quantity

__all__ = ["history"]

_VERB = {
    Action.PRODUCE: "added",
    Action.CONSUME: "used",
    Action.RAISE: "counted more",
    Action.LOWER: "counted less",
    Action.GIVE: "gave",
}


def _changes(view: LedgerView, edit: dict[str, object]) -> str:
    """``location → 'Church hall', note`` (values when the edit recorded them)."""
    values = edit.get("values")
    values = values if isinstance(values, dict) else {}
    fields = str(edit.get("fields", "")).split(",")
    parts = []
    for field in fields:
        if field in values:
            value = str(values[field])
            shown = view.member_name(value) if field == "keeper" else value
            parts.append(f"{field} → '{shown}'")
        else:
            parts.append(field)
    return ", ".join(parts)


def history(view: LedgerView, *, resource: str | None = None) -> list[HistoryItem]:
    """Every recorded action, newest first; only one resource's if ``resource`` is given."""
    name = view.member_name
    items: list[HistoryItem] = []
    resources = view.tables["resources"]

    def label(rid: str) -> str:
        raw = resources.get(rid, {})
        value = raw.get("name")
        return value if isinstance(value, str) else rid[:8]

    def amount_of(rid: str, quantity: Decimal) -> str:
        unit = str(resources.get(rid, {}).get("unit", ""))
        return f"{format_quantity(quantity)} {unit}".strip()

    events = view.events()
    # The stock a resource was added with is recorded as an event in the same change:
    # told as part of adding it ("added Compost (12 bags)"), not as a line of its own.
    initial = {
        e.resource: e
        for e in events
        if e.action is Action.PRODUCE
        and e.note == STARTING_STOCK
        and e.by == resources.get(e.resource, {}).get("created_by")
    }
    for rid, raw in resources.items():
        if resource and rid != resource:
            continue
        created_at, by = raw.get("created_at"), raw.get("created_by")
        if isinstance(created_at, int) and isinstance(by, str):
            stock = f" ({amount_of(rid, initial[rid].quantity)})" if rid in initial else ""
            what = f"added {label(rid)}{stock}"
            items.append(HistoryItem(at=created_at, by=by, what=what, entry=rid))
        edits = raw.get("edits")
        rivals = {
            r.edit: [o.by for o in clash.rivals if o.by != r.by]
            for clash in clashes.field_clashes(raw)
            for r in clash.rivals
        }
        if isinstance(edits, dict):
            for edit_id, edit in edits.items():
                if isinstance(edit, dict) and isinstance(edit.get("at"), int):
                    what = f"edited {label(rid)} ({_changes(view, edit)})"
                    if edit.get("fields") == "removed":
                        what = f"removed {label(rid)}"
                    others = sorted({name(m) for m in rivals.get(edit_id, [])})
                    if edit_id in rivals:
                        what += " — a clash: " + (
                            f"{' and '.join(others)} set it too, at the same time"
                            if others
                            else "set twice at the same time"
                        )
                    items.append(
                        HistoryItem(
                            at=int(edit["at"]), by=str(edit.get("by", "")), what=what, entry=rid
                        )
                    )
    borrower_of = {e.id: e.to for e in events if e.action is Action.LEND}  # lend id -> borrower
    for event in events:
        if resource and event.resource != resource:
            continue
        if initial.get(event.resource) is event:
            continue
        thing = label(event.resource)
        amount = amount_of(event.resource, event.quantity)
        if event.action is Action.LEND:
            until = f" until {format_date(event.until)}" if event.until else ""
            taken = event.to == event.by  # a member borrowing it themselves
            what = f"took {thing}{until}" if taken else f"lent {thing} to {name(event.to)}{until}"
        elif event.action is Action.RETURN:
            lenders = sorted(
                {
                    name(borrower_of[c])
                    for c in event.closes
                    if c in borrower_of and borrower_of[c] != event.by
                }
            )
            what = f"recorded the return of {thing}" + (
                f" from {' and '.join(lenders)}" if lenders else ""
            )
            if not lenders and any(borrower_of.get(c) == event.by for c in event.closes):
                what = f"gave back {thing}"
        elif event.action is Action.GIVE:
            what = f"gave {amount} of {thing} to {name(event.to)}"
        else:
            what = f"{_VERB[event.action]} {amount} of {thing}"
        items.append(HistoryItem(at=event.at, by=event.by, what=what, entry=event.id))
    if resource is None:
        for need in view.needs():
            items.append(
                HistoryItem(
                    at=need.created_at, by=need.created_by, what=f"needs {need.what}", entry=need.id
                )
            )
            if need.closed_at is not None:
                items.append(
                    HistoryItem(
                        at=need.closed_at,
                        by=need.closed_by,
                        what=f"closed the need for {need.what}",
                        entry=need.id,
                    )
                )
        for c in view.commitments():
            proposed = f"proposed that {name(c.giver)} gives {name(c.receiver)} {c.what}"
            if c.handoff:
                proposed = f"recorded the handoff agreed with {c.neighbour}: {c.what}"
            items.append(HistoryItem(at=c.created_at, by=c.created_by, what=proposed, entry=c.id))
            for change in c.changes:
                what = f"{change.to_status.value} the commitment '{c.what}'"
                if c.handoff and change.to_status is CommitmentStatus.FULFILLED:
                    # Receiving, a member says it arrived; giving, the other group said so.
                    what = (
                        f"said '{c.what}' arrived"
                        if c.receiver
                        else f"recorded that {c.neighbour} said '{c.what}' arrived"
                    )
                if not change.applied:
                    what += " (overtaken by another change)"
                items.append(HistoryItem(at=change.at, by=change.by, what=what, entry=c.id))
        for m in view.members(include_gone=True):
            items.append(HistoryItem(at=m.joined_at, by=m.id, what="joined the group", entry=m.id))
            raw = view.tables["members"][m.id]
            removed, left = raw.get("removed"), raw.get("left")
            if isinstance(removed, dict):
                at, by = removed.get("created_at"), removed.get("created_by")
                what = f"removed {m.name} from the group"
                items.append(
                    HistoryItem(
                        at=at if isinstance(at, int) else 0,
                        by=by if isinstance(by, str) else "",
                        what=what,
                        entry=m.id,
                    )
                )
            if isinstance(left, dict):
                at = left.get("at")
                at = at if isinstance(at, int) else 0
                items.append(HistoryItem(at=at, by=m.id, what="left the group", entry=m.id))
    items.sort(key=lambda item: (item.at, item.entry, item.what), reverse=True)
    return items
