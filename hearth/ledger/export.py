"""A ledger as plain data: JSON objects for scripts, CSV for spreadsheets, and JSON-LD in
the ValueFlows vocabulary so other economic tools can read a group's ledger.

The ``as_*`` functions are also what ``--json`` prints, so the CLI and exports agree.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

from hearth.ledger.conflicts import find_conflicts
from hearth.ledger.model import (
    Commitment,
    CommitmentStatus,
    Conflict,
    Event,
    Member,
    Need,
    Resource,
)
from hearth.ledger.view import LedgerView
from hearth.values import format_quantity

__all__ = [
    "as_commitment",
    "as_conflict",
    "as_event",
    "as_member",
    "as_need",
    "as_resource",
    "export_csv",
    "export_json",
    "export_valueflows",
    "number",
]


def number(value: Decimal | None) -> int | float | None:
    """A quantity as a JSON number: an int when whole."""
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def as_resource(view: LedgerView, r: Resource) -> dict[str, object]:
    """A resource as a JSON object."""
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind.value,
        "quantity": number(r.quantity),
        "unit": r.unit,
        "custodian": view.member_name(r.custodian),
        "custodian_id": r.custodian,
        "keeper_id": r.keeper,
        "lent_to": [view.member_name(m) for m in r.lent_to],
        "lent_until": r.lent_until,
        "location": r.location,
        "note": r.note,
        "shareable": r.shareable,
        "created_by": r.created_by,
        "created_at": r.created_at,
        "updated_by": r.updated_by,
        "updated_at": r.updated_at,
        "removed": r.removed,
    }


def as_need(view: LedgerView, n: Need) -> dict[str, object]:
    """A need as a JSON object."""
    return {
        "id": n.id,
        "what": n.what,
        "quantity": number(n.quantity),
        "unit": n.unit,
        "by": n.by,
        "status": n.status.value,
        "created_by": n.created_by,
        "created_by_name": view.member_name(n.created_by),
        "created_at": n.created_at,
        "closed_by": n.closed_by or None,
        "closed_at": n.closed_at,
    }


def as_commitment(view: LedgerView, c: Commitment) -> dict[str, object]:
    """A commitment as a JSON object, with its status changes."""
    return {
        "id": c.id,
        "what": c.what,
        "giver": view.giver_name(c),
        "giver_id": c.giver,
        "receiver": view.receiver_name(c),
        "receiver_id": c.receiver,
        "neighbour": c.neighbour or None,
        "handoff": c.handoff or None,
        "resource": c.resource or None,
        "quantity": number(c.quantity),
        "due": c.due,
        "status": c.status.value,
        "changes": [
            {
                "from": s.from_status.value,
                "to": s.to_status.value,
                "by": s.by,
                "at": s.at,
                "applied": s.applied,
            }
            for s in c.changes
        ],
        "created_by": c.created_by,
        "created_at": c.created_at,
    }


def as_event(view: LedgerView, e: Event) -> dict[str, object]:
    """An economic event as a JSON object."""
    return {
        "id": e.id,
        "action": e.action.value,
        "resource": e.resource,
        "quantity": number(e.quantity),
        "to": e.to or None,
        "to_name": view.member_name(e.to) if e.to else None,
        "until": e.until,
        "closes": list(e.closes),
        "fulfils": e.fulfils or None,
        "note": e.note,
        "by": e.by,
        "at": e.at,
    }


def as_member(m: Member) -> dict[str, object]:
    """A member as a JSON object."""
    return {
        "id": m.id,
        "name": m.name,
        "role": m.role.value,
        "devices": list(m.devices),
        "key": m.key,
        "joined_at": m.joined_at,
        "status": m.status,
    }


def as_conflict(c: Conflict) -> dict[str, object]:
    """A conflict as a JSON object."""
    return {
        "id": c.id,
        "kind": c.kind,
        "summary": c.summary,
        "advice": c.advice,
        "entries": list(c.entries),
    }


def export_json(view: LedgerView, group_name: str) -> str:
    """The whole ledger as one JSON document."""
    data = {
        "group": group_name,
        "members": [as_member(m) for m in view.members(include_gone=True)],
        "resources": [as_resource(view, r) for r in view.resources(include_removed=True)],
        "needs": [as_need(view, n) for n in view.needs()],
        "commitments": [as_commitment(view, c) for c in view.commitments()],
        "events": [as_event(view, e) for e in view.events()],
        "conflicts": [as_conflict(c) for c in find_conflicts(view)],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def export_csv(view: LedgerView) -> str:
    """The ledger as one CSV table of rows, one per resource, need, commitment and event,
    for a spreadsheet: names rather than ids where a row refers to another, and times as
    ISO 8601 (UTC)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "type",
            "id",
            "name",
            "kind_or_action",
            "quantity",
            "unit",
            "status",
            "who",
            "other",
            "date",
            "created_at",
        ]
    )
    name = view.member_name
    resources = view.resources(include_removed=True)
    resource_names = {r.id: r.name for r in resources}
    for r in resources:
        writer.writerow(
            [
                "resource",
                r.id,
                r.name,
                r.kind.value,
                format_quantity(r.quantity),
                r.unit,
                "removed" if r.removed else "",
                name(r.custodian),
                r.location,
                _iso(r.lent_until) or "",
                _iso(r.created_at),
            ]
        )
    for n in view.needs():
        writer.writerow(
            [
                "need",
                n.id,
                n.what,
                "",
                format_quantity(n.quantity) if n.quantity is not None else "",
                n.unit,
                n.status.value,
                name(n.created_by),
                "",
                _iso(n.by) or "",
                _iso(n.created_at),
            ]
        )
    for c in view.commitments():
        writer.writerow(
            [
                "commitment",
                c.id,
                c.what,
                "",
                format_quantity(c.quantity) if c.quantity is not None else "",
                "",
                c.status.value,
                name(c.giver),
                name(c.receiver),
                _iso(c.due) or "",
                _iso(c.created_at),
            ]
        )
    for e in view.events():
        writer.writerow(
            [
                "event",
                e.id,
                resource_names.get(e.resource, e.resource),
                e.action.value,
                format_quantity(e.quantity),
                "",
                "",
                name(e.by),
                name(e.to) if e.to else "",
                _iso(e.until) or "",
                _iso(e.at),
            ]
        )
    return out.getvalue()


_VF = "https://w3id.org/valueflows/ont/vf#"
_STATUS_FINISHED = {
    CommitmentStatus.FULFILLED,
    CommitmentStatus.DECLINED,
    CommitmentStatus.CANCELLED,
}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    from datetime import datetime, timezone

    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _measure(quantity: Decimal | None, unit: str) -> dict[str, object] | None:
    if quantity is None:
        return None
    return {
        "@type": "om2:Measure",
        "om2:hasNumericalValue": number(quantity),
        "om2:hasUnit": unit or "om2:one",
    }


def export_valueflows(view: LedgerView, group_id: str, group_name: str) -> str:
    """The ledger as JSON-LD in the ValueFlows vocabulary."""
    base = f"urn:hearth:{group_id}:"
    agent = {m.id: f"{base}agent:{m.id}" for m in view.members()}

    def who(member_id: str) -> str:
        return agent.get(member_id, f"{base}agent:{member_id}")

    graph: list[dict[str, object]] = [
        {"@id": f"{base}group", "@type": "vf:Organization", "vf:name": group_name}
    ]
    for m in view.members():
        graph.append(
            {
                "@id": who(m.id),
                "@type": "vf:Person",
                "vf:name": m.name,
                "vf:memberOf": f"{base}group",
            }
        )
    for r in view.resources(include_removed=True):
        graph.append(
            {
                "@id": f"{base}resource:{r.id}",
                "@type": "vf:EconomicResource",
                "vf:name": r.name,
                "vf:classifiedAs": r.kind.value,
                "vf:primaryAccountable": who(r.owner) if r.owner else f"{base}group",
                "vf:custodian": who(r.custodian),
                "vf:accountingQuantity": _measure(r.quantity, r.unit),
                "vf:onhandQuantity": _measure(Decimal(0) if r.lent_to else r.quantity, r.unit),
                "vf:currentLocation": r.location or None,
                "vf:note": r.note or None,
            }
        )
    for n in view.needs():
        graph.append(
            {
                "@id": f"{base}intent:{n.id}",
                "@type": "vf:Intent",
                "vf:action": "transfer",
                "vf:name": n.what,
                "vf:receiver": who(n.created_by),
                "vf:resourceQuantity": _measure(n.quantity, n.unit),
                "vf:due": _iso(n.by),
                "vf:finished": n.status.value == "closed",
            }
        )
    for c in view.commitments():
        graph.append(
            {
                "@id": f"{base}commitment:{c.id}",
                "@type": "vf:Commitment",
                "vf:action": "transfer",
                "vf:note": c.what,
                "vf:provider": who(c.giver),
                "vf:receiver": who(c.receiver),
                "vf:resourceInventoriedAs": f"{base}resource:{c.resource}" if c.resource else None,
                "vf:resourceQuantity": _measure(c.quantity, ""),
                "vf:due": _iso(c.due),
                "vf:finished": c.status in _STATUS_FINISHED,
                "hearth:status": c.status.value,
            }
        )
    for e in view.events():
        graph.append(
            {
                "@id": f"{base}event:{e.id}",
                "@type": "vf:EconomicEvent",
                "vf:action": e.action.valueflows,
                "vf:resourceInventoriedAs": f"{base}resource:{e.resource}",
                "vf:provider": who(e.by),
                "vf:receiver": who(e.to) if e.to else who(e.by),
                "vf:resourceQuantity": _measure(e.quantity, ""),
                "vf:hasPointInTime": _iso(e.at),
                "vf:fulfills": f"{base}commitment:{e.fulfils}" if e.fulfils else None,
                "vf:note": e.note or None,
            }
        )
    document = {
        "@context": {
            "vf": _VF,
            "om2": "http://www.ontology-of-units-of-measure.org/resource/om-2/",
            "hearth": "urn:hearth:vocab#",
        },
        "@graph": [{k: v for k, v in node.items() if v is not None} for node in graph],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)
