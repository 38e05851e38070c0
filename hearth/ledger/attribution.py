"""Content is written in its author's name only (docs/security.md §6, R2a).

The ledger's entries say who did what in fields the writing client fills in itself:
``created_by``, ``updated_by``, ``added_by``, ``claimed_by``, ``closed_by``,
``removed_by``, and the ``by`` of an event, of a resource's edit record and of a
commitment's status change (a need's ``by`` is its due date, an integer). R2 ties a
change to the device that signed its bundle; this module ties what a change says of its
author to the member that device writes for, judged from the change's operations alone
(:func:`hearth.ledger.change_ops.keyed_values`), before it is applied, the same way on
every node: at intake (:mod:`hearth.validity.intake`) and inside a snapshot's checks
(:mod:`hearth.validity.snapshots`, R13).

A change may put at one of these keys only the signing member's id, or an integer at
``by``; nothing else (another name, a deletion, a map, any other value) — so a member
can neither write in another's name nor take a name off an entry. One honest path copies
other members' names: moving finished entries to an archive document
(:mod:`hearth.ledger.archive`). There a name may be another member's only if the live
document held that very value at that very place, as the bundle's own changes to the
live document saw it (the deletions that move the entries out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hearth.errors import LedgerError, ProtocolError
from hearth.ledger.automerge_doc import LedgerDoc, change_body
from hearth.ledger.change_ops import SET_ACTION, KeyedValue, keyed_values

__all__ = [
    "ATTRIBUTION_KEYS",
    "Foreign",
    "check_archive_names",
    "check_own_names",
    "check_read_names",
    "foreign_names",
    "names_other",
    "own_part",
]

ATTRIBUTION_KEYS = frozenset(
    {"created_by", "updated_by", "added_by", "claimed_by", "closed_by", "removed_by", "by"}
)
"""The keys whose value says which member did something."""


@dataclass(frozen=True, slots=True)
class Foreign:
    """An operation of a change that puts, at an attribution key, something other than
    its author's member id: which change (its index in the batch) and operation, and
    what it wrote."""

    change: int
    op: KeyedValue


def _own(op: KeyedValue, author: str) -> bool:
    if op.action != SET_ACTION:
        return False  # a deletion or a map: takes a name off, or hides it
    if isinstance(op.value, str):
        return op.value == author
    # A need's due date (an integer ``by``): read as nobody's name wherever else it is.
    return op.key == "by" and isinstance(op.value, int) and not isinstance(op.value, bool)


def foreign_names(changes: Sequence[bytes], author: str) -> list[Foreign]:
    """The operations of the changes that write an attribution other than ``author``'s
    member id; :class:`LedgerError` for a change whose columns cannot be read."""
    return [
        Foreign(index, op)
        for index, change in enumerate(changes)
        for op in keyed_values(change_body(change), ATTRIBUTION_KEYS)
        if not _own(op, author)
    ]


def check_own_names(changes: Sequence[bytes], author: str) -> None:
    """:class:`ProtocolError` unless every change (to the live document) writes in
    ``author``'s name only."""
    found = _foreign(changes, author)
    if found:
        raise ProtocolError(written_as_another(found[0]))


def check_read_names(read: Sequence[Sequence[KeyedValue] | str], author: str) -> None:
    """:func:`check_own_names` over what was read of each change already: its operations
    at :data:`ATTRIBUTION_KEYS` (:func:`~hearth.ledger.automerge_doc.read_change_names`),
    or why they could not be read. The same verdict, the same words."""
    found: list[Foreign] = []
    for index, names in enumerate(read):
        if isinstance(names, str):
            raise ProtocolError(f"a change whose names cannot be read ({names})")
        found += (Foreign(index, op) for op in names if not _own(op, author))
    if found:
        raise ProtocolError(written_as_another(found[0]))


def check_archive_names(
    archive: LedgerDoc,
    live: LedgerDoc,
    changes: Sequence[bytes],
    author: str,
    live_heads: Sequence[bytes],
) -> None:
    """:class:`ProtocolError` unless every change to an archive document writes in
    ``author``'s name, or copies a name the live document held at the same place at
    ``live_heads`` — what the bundle's own changes to the live document build on (the
    deletions that move the entries out; none: no name of another is copied)."""
    found = _foreign(changes, author)
    by_change: dict[int, list[Foreign]] = {}
    for foreign in found:
        by_change.setdefault(foreign.change, []).append(foreign)
    for index, foreigns in by_change.items():
        paths = archive.paths_of(changes[index], [f.op.index for f in foreigns])
        for foreign in foreigns:
            path = paths.get(foreign.op.index)
            try:
                copied = (
                    foreign.op.action == SET_ACTION
                    and path is not None
                    and bool(live_heads)
                    and _same(live.value_at(path, live_heads), foreign.op.value)
                )
            except LedgerError:
                copied = False
            if not copied:
                raise ProtocolError(written_as_another(foreign) + " in an archive")


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def _foreign(changes: Sequence[bytes], author: str) -> list[Foreign]:
    try:
        return foreign_names(changes, author)
    except LedgerError as exc:
        raise ProtocolError(f"a change whose names cannot be read ({exc})") from exc


def written_as_another(foreign: Foreign) -> str:
    """Why a change is refused, in words."""
    return (
        f"a change written in another member's name (its {foreign.op.key!r} does not name "
        "the member whose device signed it)"
    )


def names_other(raw: Mapping[str, object], me: str) -> bool:
    """Whether an entry or record names someone other than ``me`` as who did it."""
    return any(k in ATTRIBUTION_KEYS and isinstance(v, str) and v != me for k, v in raw.items())


def own_part(old: Mapping[str, object], now: Mapping[str, object], me: str) -> dict[str, object]:
    """What of ``old`` (an entry as it stood) differs from ``now`` and may be written again
    in ``me``'s name (R8's re-issue): values that differ, with sub-maps compared key by
    key — leaving out names of others and whole records (an edit, a status change, a
    removal) in someone else's name: those are theirs to write again."""
    out: dict[str, object] = {}
    for key, value in old.items():
        current = now.get(key)
        if isinstance(value, Mapping):
            if names_other(value, me):
                continue
            inner = own_part(value, current if isinstance(current, Mapping) else {}, me)
            if inner or not isinstance(current, Mapping):
                out[key] = inner
        elif current != value:
            if key in ATTRIBUTION_KEYS and isinstance(value, str) and value != me:
                continue
            out[key] = value
    return out
