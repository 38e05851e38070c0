"""Ledger entries in words and table cells, as the command line and the app both show them."""

from __future__ import annotations

from collections.abc import Sequence

from hearth.ledger import clashes
from hearth.ledger.conflicts import describe_clash
from hearth.ledger.model import Commitment, Need, Resource
from hearth.ledger.view import LedgerView
from hearth.values import format_date, format_quantity

__all__ = ["amount", "commitment_rows", "describe_resource", "holder", "need_rows", "resource_rows"]


def amount(quantity: object, unit: str) -> str:
    """``3 kg``, ``2.5``, or empty."""
    if quantity is None:
        return ""
    text = format_quantity(quantity)  # type: ignore[arg-type]
    return f"{text} {unit}".strip()


def commitment_amount(view: LedgerView, c: Commitment) -> str:
    """A commitment's quantity in its resource's unit (``4 bags``), or in the unit it
    records itself (a neighbour group's handoff to us), or empty."""
    raw = view.tables["resources"].get(c.resource) if c.resource else None
    unit = raw.get("unit") if raw else view.tables["commitments"].get(c.id, {}).get("unit")
    return amount(c.quantity, unit if isinstance(unit, str) else "")


def holder(view: LedgerView, r: Resource) -> str:
    """Who has a resource: ``Ben (borrowed until 14 Dec)``, or ``Cleo & Ben (!)`` when it
    was lent to two people at once."""
    if len(r.lent_to) > 1:
        return " & ".join(view.member_name(m) for m in r.lent_to) + " (!)"
    who = view.member_name(r.custodian)
    if r.lent_to:
        who += " (borrowed" + (f" until {format_date(r.lent_until)})" if r.lent_until else ")")
    return who


def resource_rows(view: LedgerView, resources: Sequence[Resource]) -> list[list[str]]:
    """Table rows for resources."""
    rows = []
    for r in resources:
        holder_ = holder(view, r)
        rows.append(
            [r.id[:8], r.name, r.kind.value, amount(r.quantity, r.unit), holder_, r.location]
        )
    return rows


def describe_resource(view: LedgerView, r: Resource) -> str:
    """A resource's details, several lines."""
    lines = [
        f"{r.name}  ({r.kind.value}, id {r.id})",
        f"  quantity:  {amount(r.quantity, r.unit) or '0'}",
        f"  with:      {holder(view, r)}",
        f"  kept by:   {view.member_name(r.keeper)}",
    ]
    if r.location:
        lines.append(f"  where:     {r.location}")
    if r.note:
        lines.append(f"  note:      {r.note}")
    if r.removed:
        lines.append("  (removed from the ledger)")
    if len(r.lent_to) > 1:
        lines.append(
            "  (!) lent to two people at once: record a return for whoever does not have it"
        )
    raw = view.tables["resources"].get(r.id, {})
    lines += [f"  (!) {describe_clash(view, c)}" for c in clashes.field_clashes(raw)]
    return "\n".join(lines)


def need_rows(view: LedgerView, needs: Sequence[Need]) -> list[list[str]]:
    """Table rows for needs."""
    return [
        [
            n.id[:8],
            n.what,
            amount(n.quantity, n.unit),
            format_date(n.by) if n.by else "",
            view.member_name(n.created_by),
            n.status.value,
        ]
        for n in needs
    ]


def commitment_rows(
    view: LedgerView, commitments: Sequence[Commitment], now_ms: int
) -> list[list[str]]:
    """Table rows for commitments, overdue ones marked."""
    rows = []
    for c in commitments:
        due = format_date(c.due) if c.due else ""
        if c.due and c.due < now_ms and c.status.is_open:
            due += " OVERDUE"
        rows.append(
            [
                c.id[:8],
                c.what,
                commitment_amount(view, c),
                view.giver_name(c),
                view.receiver_name(c),
                due,
                c.status.value,
            ]
        )
    return rows


def device_name(view: LedgerView, member_id: str, device_id: str) -> str:
    """A device's name as its card gives it (the host it was set up on)."""
    devices = view.tables["members"].get(member_id, {}).get("devices")
    card = devices.get(device_id) if isinstance(devices, dict) else None
    name = card.get("name") if isinstance(card, dict) else None
    return name if isinstance(name, str) else device_id[:8]
