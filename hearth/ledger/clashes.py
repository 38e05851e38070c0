"""Two edits of one field made while apart: noticed from the edits themselves.

Automerge keeps one value of a field edited on two devices at once and the binding shows
only that one, so the ledger records with each edit of a resource what its author had
seen: for each field it changes, the edits of that field that were current on the
author's device (``over``), and the value it set (``values``). An edit that nobody's later
edit of the same field has seen is a *head* of that field; two heads mean two people set
the field without seeing each other's change. The clash lasts until someone edits the
field again, having seen both (their edit lists both as ``over``).

Edits written before this was recorded carry no ``over``; such an edit counts as having
seen every earlier edit of its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FieldClash", "SetValue", "as_value", "field_clashes", "field_heads", "over_fields"]

# Fields whose edits are tracked; a quantity is a sum of events, never a clash of values.
TRACKED = ("name", "kind", "unit", "location", "note", "keeper", "shareable")


@dataclass(frozen=True)
class SetValue:
    """One edit's value for a field: who set it, when, and to what (as text)."""

    edit: str
    by: str
    at: int
    value: str


@dataclass(frozen=True)
class FieldClash:
    """A field of an entry set to different values by edits that did not see each other."""

    field: str
    current: str  # the value the merged ledger shows
    rivals: tuple[SetValue, ...]  # oldest first


@dataclass(frozen=True)
class _Edit:
    id: str
    by: str
    at: int
    fields: tuple[str, ...]
    over: Mapping[str, object] | None  # None: written before edits said what they saw
    values: Mapping[str, object]


def _edits(raw: Mapping[str, object]) -> list[_Edit]:
    """The entry's edits, oldest first."""
    edits = raw.get("edits")
    found = []
    for edit_id, edit in edits.items() if isinstance(edits, Mapping) else ():
        if not isinstance(edit, Mapping) or not isinstance(edit.get("at"), int):
            continue
        text, over, values = edit.get("fields"), edit.get("over"), edit.get("values")
        found.append(
            _Edit(
                id=str(edit_id),
                by=str(edit.get("by", "")),
                at=int(edit["at"]),
                fields=tuple(f for f in text.split(",") if f) if isinstance(text, str) else (),
                over=over if isinstance(over, Mapping) else None,
                values=values if isinstance(values, Mapping) else {},
            )
        )
    return sorted(found, key=lambda e: (e.at, e.id))


def _heads(edits: list[_Edit], field: str) -> list[_Edit]:
    touching = [e for e in edits if field in e.fields]
    seen: set[str] = set()
    for n, edit in enumerate(touching):
        if edit.over is None:  # it saw everything earlier
            seen.update(e.id for e in touching[:n])
        else:
            text = edit.over.get(field)
            seen.update(text.split() if isinstance(text, str) else ())
    return [e for e in touching if e.id not in seen]


def field_heads(raw: Mapping[str, object], field: str) -> list[str]:
    """Ids of the edits of ``field`` that no later edit of it has seen (oldest first)."""
    return [e.id for e in _heads(_edits(raw), field)]


def over_fields(raw: Mapping[str, object], fields: list[str]) -> dict[str, str]:
    """What a new edit of ``fields`` records as seen: each field's current heads."""
    edits = _edits(raw)
    return {f: " ".join(e.id for e in _heads(edits, f)) for f in fields if f in TRACKED}


def field_clashes(raw: Mapping[str, object]) -> list[FieldClash]:
    """Every field of an entry that edits made apart left with rival values."""
    edits = _edits(raw)
    found = []
    for field in TRACKED:
        rivals = [
            SetValue(e.id, e.by, e.at, _as_text(e.values[field]))
            for e in _heads(edits, field)
            if field in e.values
        ]
        if len({r.value for r in rivals}) > 1:
            found.append(FieldClash(field, _as_text(raw.get(field)), tuple(rivals)))
    return found


def as_value(value: object) -> str:
    """A field's value as an edit records it."""
    return _as_text(value)


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)
