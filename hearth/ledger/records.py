"""What a record says is its writer's (docs/security.md §5, R2a).

:mod:`hearth.ledger.attribution` stops a change naming anyone but its signer. But a
line of history is a name *and* what is said beside it: "Ada lent the ladder to Cat" is
an event whose ``by`` is Ada's and whose ``to`` is Cat's. A change that leaves the name
alone and rewrites the rest — the borrower, a "declined" made "accepted", what an edit
changed, what a proposal promises — or deletes or replaces the record, makes history say
Ada did what someone else did. So, judged from a change's operations and the document as
its bundle builds on it, the same on every node (at intake, and in a snapshot's checks):

- a **record** — a map holding a member's id at ``by``: an event, an edit of a
  resource, a commitment's status change — is written by that member alone;
- an **entry** holding another member's id at ``created_by`` (a resource, a need, a
  commitment, a relay) takes from others only what the ledger's own operations add to
  it: a resource's details with its ``updated_by`` and a new edit record, a need's
  closing, a commitment's new status change, a relay's removal;
- nothing naming another member is deleted or replaced — except an entry that the same
  bundle moves, whole and unchanged, into an archive (:func:`check_archive_copy`);
- an archive copies: every value a bundle puts into an archive is the one the live
  document held at that place where the bundle's own changes to it build on.

The members and invites tables are judged by :mod:`hearth.ledger.membership_rules` instead, with one
rule from here: nothing in them that is a map is deleted or written anew as a new map.
Honest writers never do, and a removal is known by the map it wrote into (the removal
that waits to be written again, R8, is found in the member's entry: written anew, the
member's entry would no longer show it, and they would be handed the keys made without
them). The ``meta`` table holds settings, not history.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

from hearth.errors import LedgerError, ProtocolError
from hearth.ledger import entry_ids
from hearth.ledger.attribution import ATTRIBUTION_KEYS
from hearth.ledger.automerge_doc import EntryRef, LedgerDoc, change_body, change_hash
from hearth.ledger.change_ops import (
    DELETE_ACTION,
    MAKE_ACTIONS,
    SET_ACTION,
    Columns,
    NewKeys,
    ObjectRef,
    Operation,
    keys_written_into,
    operations,
    read_columns,
    values,
    writes_only_new,
)

__all__ = ["EXTENDABLE", "Moved", "builds_on", "check_archive_copy", "check_records"]

EXTENDABLE: dict[str, frozenset[str]] = {
    "resources": frozenset(
        {
            "name",
            "kind",
            "unit",
            "location",
            "note",
            "keeper",
            "shareable",
            "removed",
            "updated_by",
            "updated_at",
            "edits",
        }
    ),
    "needs": frozenset({"closed", "closed_by", "closed_at"}),
    "commitments": frozenset({"changes"}),
    "events": frozenset(),
    "relays": frozenset({"url", "removed", "removed_by", "created_by", "created_at"}),
}
"""The tables whose entries say who did what, and the keys of an entry that a member
other than its creator may write (the ledger's own operations: edit, close, answer,
remove)."""

_MEMBERSHIP = frozenset({"members", "invites"})

_DETAILS = EXTENDABLE["resources"] - {"updated_by", "updated_at", "edits"}
"""What a resource's edit changes, and records in an edit record."""

_RECORDS_IN = {"resources": "edits", "commitments": "changes"}
"""The sub-map of an entry where others add records of their own."""

Moved = dict[EntryRef, set[tuple[str, ...]]]
"""For each entry a bundle writes into an archive, the paths of the values it puts there."""


def builds_on(changes: Sequence[bytes]) -> list[bytes]:
    """The changes a batch of one document's changes builds on (not among them)."""
    infos = [change_hash(c) for c in changes]
    own = {i.hash for i in infos}
    return sorted({d for i in infos for d in i.deps} - own)


def _refuse(why: str) -> ProtocolError:
    return ProtocolError(f"a change that {why} (only its writer may)")


def names_other(value: object, author: str) -> bool:
    """Whether a map, or any map inside it, names a member other than ``author`` at an
    attribution key."""
    if not isinstance(value, Mapping):
        return False
    return any(
        (key in ATTRIBUTION_KEYS and isinstance(v, str) and v != author) or names_other(v, author)
        for key, v in value.items()
    )


def check_records(
    doc: LedgerDoc,
    changes: Sequence[bytes],
    author: str,
    named: Iterable[EntryRef],
    moved: Moved,
    spared: set[ObjectRef],
    new: Sequence[frozenset[ObjectRef] | None] | None = None,
    *,
    tagged: bool = False,
    new_keys: Sequence[NewKeys | None] | None = None,
) -> None:
    """:class:`ProtocolError` unless one bundle's ``changes`` to the live document
    ``doc`` leave what others wrote as they wrote it (the module's rules), judged at
    what the changes build on. ``named``: the entries the bundle says it touched (only
    used to find the maps it writes into: a write into a map found in none is refused);
    ``moved``: what it writes into archives (:func:`check_archive_copy`); ``spared``:
    the maps of the members and invites tables, judged elsewhere; ``new``: each
    change's :func:`~hearth.ledger.change_ops.new_writes`, when read already (a
    snapshot's bundles are read once, when opened); ``tagged``: the group's entry ids
    carry their writer's tag (:mod:`hearth.ledger.entry_ids`); ``new_keys``: each change's
    :class:`~hearth.ledger.change_ops.NewKeys`, read with ``new``, for the tags."""
    if not changes:
        return
    tables = frozenset(doc.table_refs())
    try:
        if new is not None and all(n is not None and n <= tables for n in new):
            # New entries only, as read when opened: R2a judges their names.
            if not tagged:
                return
            if new_keys is not None and _check_made(doc, new_keys, author):
                return
        bodies = [change_body(c) for c in changes]
        columns = [read_columns(body) for body in bodies]
        if all(writes_only_new(b, tables, c) for b, c in zip(bodies, columns, strict=True)):
            # New entries and what is in them only: R2a judges their names.
            if tagged:
                _check_new_entries(doc, bodies, columns, author)
            return
        ops = [op for body in bodies for op in operations(body)]
    except LedgerError as exc:
        raise ProtocolError(f"a change whose operations cannot be read ({exc})") from exc
    handoff_in = _handoffs(bodies, lambda: ops)
    heads = builds_on(changes)
    made = {op.id for op in ops if op.action in MAKE_ACTIONS}
    wanted: set[ObjectRef] = {op.obj for op in ops if op.obj is not None and op.obj not in made}
    paths = doc.maps_at(named, heads, wanted)
    changed: set[str] = set()  # others' resources whose details these changes write
    recorded: set[str] = set()  # resources these changes add an edit record to
    closing: set[str] = set()  # needs these changes close, or say when they were closed
    closer: set[str] = set()  # needs these changes say who closed
    containers: dict[ObjectRef, str] = {}  # edits maps these changes make, by resource
    along: dict[tuple[str, ...], tuple[list[dict[str, object]], frozenset[str]]] = {}
    for op in ops:
        if op.obj is None:
            raise _refuse("writes to the ledger's root")
        if op.obj in made:
            if op.obj in containers and op.action in MAKE_ACTIONS:
                recorded.add(containers[op.obj])
            continue  # inside a map this bundle makes: R2a judges its names
        path = paths.get(op.obj)
        if path is None:
            if op.obj in spared and not op.preds:
                continue
            raise ProtocolError(
                "a change that writes into an entry its bundle does not name, or one "
                "that was not there"
            )
        if tagged:
            entry_ids.check_new_key(path, op, author, handoff_in)
        if path[0] in EXTENDABLE:
            if len(path) > 1 and path not in along:
                along[path] = doc.along(path, ("by", "created_by", "closed_by"), heads)
            held = _check_op(doc, heads, path, op, author, moved, along.get(path))
            creator = held.get("created_by")
            if path[0] == "resources" and len(path) > 1:
                if len(path) == 2 and op.key == "edits" and op.action in MAKE_ACTIONS:
                    containers[op.id] = path[1]
                elif len(path) == 3 and path[2] == "edits" and op.action in MAKE_ACTIONS:
                    recorded.add(path[1])
                elif (
                    len(path) == 2
                    and op.key in _DETAILS
                    and isinstance(creator, str)
                    and creator != author
                ):
                    changed.add(path[1])
            elif path[0] == "needs" and len(path) == 2 and held.get("closed_by") != author:
                if op.key in ("closed", "closed_at"):
                    closing.add(path[1])
                elif op.key == "closed_by":
                    closer.add(path[1])
        elif (
            path[0] in _MEMBERSHIP
            and op.preds
            and op.key is not None
            and doc.map_at((*path, op.key), heads) is not None
        ):
            raise ProtocolError(
                "a change that deletes or writes anew a member's or an invite's entry, "
                "or a part of one (never done: a removal is known by where it is written)"
            )
    if closing - closer:
        raise _refuse("closes a need, or says when it was closed, in nobody's name")
    if changed - recorded:
        raise _refuse(
            "changes another member's resource without an edit record in its writer's name"
        )


def _check_made(doc: LedgerDoc, made: Sequence[NewKeys | None], author: str) -> bool:
    """The tags of the entries that changes writing only new keys into the tables make,
    from what was read of them when their bundle was opened; ``False`` (nothing judged:
    the changes are read again) if that cannot tell: a change not read so, one whose own
    objects' ids would be a table's (what it writes into that table is then not among
    the ``made`` operations; never so for an honest change), or one making a commitment
    under an untagged id (a handoff's, if its ``handoff`` says so: read from the change)."""
    tables = doc.table_refs()
    if any(m is None for m in made):
        return False
    for keys in made:
        assert keys is not None
        actor, start = keys.made_from
        if any(ref is not None and ref[0] == actor and ref[1] >= start for ref in tables):
            return False
    try:
        for keys in made:
            assert keys is not None
            for op in keys.ops:
                entry_ids.check_new_key((tables[op.obj],), op, author, _not_read)
    except _HandoffAsked:
        return False
    return True


class _HandoffAsked(Exception):
    """What a change put at ``handoff`` was asked: not read when its bundle was opened."""


def _not_read(_: tuple[bytes, int]) -> object:
    raise _HandoffAsked


def _check_new_entries(
    doc: LedgerDoc, bodies: Sequence[bytes], columns: Sequence[Columns], author: str
) -> None:
    """The tags of the entries that changes writing only new keys make in the tables."""
    tables = doc.table_refs()
    known = frozenset(tables)
    for body, read in zip(bodies, columns, strict=True):
        made = keys_written_into(read, known)
        if made:
            handoff_in = _handoffs([body], functools.partial(operations, body))
            for op in made:
                entry_ids.check_new_key((tables[op.obj],), op, author, handoff_in)


def _handoffs(
    bodies: Sequence[bytes], ops: Callable[[], Sequence[Operation]]
) -> Callable[[tuple[bytes, int]], object]:
    """What the changes (``bodies``, whose operations ``ops`` lists in order) put at
    ``handoff`` in a map they make: read only when asked (a handoff's commitment)."""

    @functools.cache
    def put() -> list[str | int | bool | bytes | None]:
        return [value for body in bodies for value in values(body)]

    def handoff_in(made: tuple[bytes, int]) -> object:
        for index, op in enumerate(ops()):
            if op.obj == made and op.key == "handoff":
                return put()[index] if index < len(put()) else None
        return None

    return handoff_in


def _check_op(
    doc: LedgerDoc,
    heads: Sequence[bytes],
    path: tuple[str, ...],
    op: Operation,
    author: str,
    moved: Moved,
    along: tuple[list[dict[str, object]], frozenset[str]] | None,
) -> dict[str, object]:
    """One operation into a map of a table in :data:`EXTENDABLE` at ``path``; ``along``:
    :meth:`LedgerDoc.along` of ``path`` (``None`` for a table's own map). Returns the
    names the entry it writes into held (empty for the table's own map)."""
    table = path[0]
    if op.key is None:
        raise _refuse("writes into a ledger table by position")
    if len(path) == 1:  # an entry of the table itself: made new, deleted or replaced
        if op.preds:
            replaced = doc.map_at((table, op.key), heads)
            if names_other(replaced, author) and not (
                op.action == DELETE_ACTION and _moved_whole(replaced, moved.get((table, op.key)))
            ):
                raise _refuse("deletes or replaces an entry in another member's name")
        return {}
    assert along is not None
    chain, maps = along
    for held in chain:
        by = held.get("by")
        if isinstance(by, str) and by != author:
            raise _refuse("changes a record in another member's name")
    closed_by = chain[0].get("closed_by")
    if (
        table == "needs"
        and op.key in ("closed", "closed_at", "closed_by")
        and isinstance(closed_by, str)
        and closed_by != author
    ):
        raise _refuse("changes another member's closing of a need")
    creator = chain[0].get("created_by")
    if isinstance(creator, str) and creator != author:
        if len(path) == 2:
            if (
                op.key not in EXTENDABLE[table]
                or op.action == DELETE_ACTION
                or (op.action in MAKE_ACTIONS and op.preds)
            ):
                raise _refuse("changes what another member's entry says")
        elif path[2] != _RECORDS_IN.get(table) or (len(path) == 3 and op.preds):
            raise _refuse("changes what another member's entry says")
    if op.key in maps and not op.preds:
        # Honest writers name what they replace. One that names nothing where what it
        # builds on holds a map makes a second map beside it, and the view shows one: a
        # record map made anew hides every record in it (or that is then written there).
        raise ProtocolError(
            "a change that makes anew a map inside an entry as if the map were not there "
            "(it could hide the records in it)"
        )
    if op.preds and op.key in maps and names_other(doc.map_at((*path, op.key), heads), author):
        raise _refuse("deletes or replaces a record in another member's name")
    return chain[0]


def _moved_whole(entry: object, copied: set[tuple[str, ...]] | None) -> bool:
    """Whether every value of a live entry is among those put into an archive."""
    return copied is not None and _scalar_paths(entry, ()) <= copied


def _scalar_paths(value: object, path: tuple[str, ...]) -> set[tuple[str, ...]]:
    if not isinstance(value, Mapping):
        return {path}
    found: set[tuple[str, ...]] = set()
    for key, inner in value.items():
        found |= _scalar_paths(inner, (*path, key))
    return found


def check_archive_copy(
    archive: LedgerDoc, live: LedgerDoc, changes: Sequence[bytes], live_heads: Sequence[bytes]
) -> Moved:
    """:class:`ProtocolError` unless every value one bundle's ``changes`` put into an
    archive is the one ``live`` held at that place at ``live_heads`` (what the bundle's
    changes to the live document build on), and they delete or replace nothing there.
    Returns what they put, by entry, for :func:`check_records`."""
    moved: Moved = {}
    for change in changes:
        try:
            ops = operations(change_body(change))
            put = values(change_body(change))
        except LedgerError as exc:
            raise ProtocolError(f"a change whose operations cannot be read ({exc})") from exc
        wanted = [i for i, op in enumerate(ops) if op.action in (SET_ACTION, DELETE_ACTION)]
        paths = archive.paths_of(change, wanted)
        for index, op in enumerate(ops):
            if op.action in MAKE_ACTIONS and not op.preds:
                continue
            if op.action != SET_ACTION or not live_heads:
                raise ProtocolError("a change that deletes or replaces what an archive holds")
            path = paths.get(index)
            if path is None or len(path) < 3:
                raise ProtocolError("a change that writes into an archive outside an entry")
            try:
                held = live.value_at(path, live_heads)
            except LedgerError:
                held = _Missing
            value = put[index] if index < len(put) else None
            if type(held) is not type(value) or held != value:
                raise ProtocolError(
                    "a change that puts into an archive what the live document did not hold"
                )
            moved.setdefault((path[0], path[1]), set()).add(path[2:])
    return moved


class _Missing:
    """Nothing that any value equals."""
