"""The only module that imports Automerge.

A ledger document is a root map of *tables*; each table maps an entry id to a map of
scalar fields (strings, integers, booleans), and a field may itself be a map of
sub-entries (a commitment's status changes, a member's devices). Nothing else is ever
stored, which keeps the binding's sharp edges (AUTOMERGE.md) out of reach:

- no counters (they panic inside Rust), no timestamps (they come back naive), no text
  objects, no lists;
- every transaction is entered with ``with`` (a transaction that is never entered
  segfaults at exit);
- change heads are checked before ``get_changes`` (unknown heads silently mean "all");
- remote changes are applied through ``receive_sync_message`` with a hand-built sync
  message, never by re-loading the document;
- binding exceptions become :class:`~hearth.errors.LedgerError`.

Because the binding's patches cannot be read, writers report which entries they touched
(:class:`Edit`), and callers refresh their views from that.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

from automerge._automerge import Transaction
from automerge.core import ROOT, Document, Message, ObjType, ScalarType, SyncState

from hearth.errors import LedgerError
from hearth.ledger.change_ops import (
    MAKE_ACTIONS,
    KeyedValue,
    NewKeys,
    ObjectRef,
    Operation,
    objects_names_and_new_keys,
    objects_written,
    operations,
    read_columns,
    read_varint,
)
from hearth.protocol.codec import uvarint

__all__ = [
    "MAX_DEPTH",
    "ChangeInfo",
    "DocWriter",
    "Edit",
    "EntryRef",
    "Fields",
    "LedgerDoc",
    "Scalar",
    "change_body",
    "change_hash",
    "objects_written_by",
    "read_change",
    "read_change_names",
]

Scalar = str | int | bool
FieldValue = Union[Scalar, None, "Fields"]
Fields = Mapping[str, FieldValue]
EntryRef = tuple[str, str]
"""(table, entry id): what an edit touched."""

MAX_DEPTH = 16
"""How deep maps are read inside an entry (Hearth's own go 3 deep: a member's device's
actor ids); deeper ones read as empty, the same on every node. A member's bundle nesting
maps thousands deep (a few KB) would otherwise overflow the stack of every node reading
it — taking it in, or a snapshot holding it."""

_SYNC_MESSAGE_TYPE = 0x42
_CHANGE_MAGIC = b"\x85\x6f\x4a\x83"
_CHUNK_CHANGE = 1
_CHUNK_DEFLATED_CHANGE = 2
_MAX_INFLATED = 16 * 1024 * 1024
_UNKNOWN: ObjectRef = (b"", -1)  # an object no path leads to (made at a list position)


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """What one local transaction produced: its change bytes and the entries it touched."""

    changes: tuple[bytes, ...]
    touched: frozenset[EntryRef]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeInfo:
    """The parts of a change's header Hearth needs before applying it."""

    hash: bytes
    deps: tuple[bytes, ...]
    actor: bytes


_REMEMBERED_CHANGE_BYTES = 4096


def change_hash(change: bytes) -> ChangeInfo:
    """Check a change's header and checksum and return its hash and dependencies.

    Automerge drops malformed changes silently, so every change from outside goes
    through here first and fails loudly instead. Large changes arrive deflated (chunk
    type 2); their hash is that of the inflated change (chunk type 1).

    Taking a bundle in asks this of each change several times; small changes (most of
    them) are remembered, big ones not, so the memory held stays small (~16 MiB at most).
    """
    if len(change) <= _REMEMBERED_CHANGE_BYTES:
        return _remembered_change_hash(change)
    return _change_hash(change)


@lru_cache(maxsize=4096)
def _remembered_change_hash(change: bytes) -> ChangeInfo:
    return _change_hash(change)


def _change_hash(change: bytes) -> ChangeInfo:
    return _header_of(change, _change_body(change))


def read_change(change: bytes) -> tuple[ChangeInfo, set[ObjectRef] | None]:
    """:func:`change_hash` and :func:`objects_written_by` of one change at once (its
    body inflated once); :class:`LedgerError` as :func:`change_hash` raises it."""
    data = _change_body(change)
    info = _header_of(change, data)
    try:
        return info, objects_written(data)
    except LedgerError:
        return info, None


def read_change_names(
    change: bytes, wanted: frozenset[str]
) -> tuple[
    ChangeInfo,
    set[ObjectRef] | None,
    list[KeyedValue] | str,
    frozenset[ObjectRef] | None,
    NewKeys | None,
]:
    """:func:`read_change`, the change's operations at the map keys in ``wanted``
    (:func:`~hearth.ledger.change_ops.keyed_values`) or why they cannot be read, the
    objects it writes only new keys into (:func:`~hearth.ledger.change_ops.new_writes`)
    and, if it writes only new keys, what R2a's entry tags ask of it
    (:class:`~hearth.ledger.change_ops.NewKeys`) — its body inflated and each of its
    columns read once; :class:`LedgerError` as :func:`change_hash` raises it."""
    data = _change_body(change)
    info = _header_of(change, data)
    try:
        columns = read_columns(data)
    except LedgerError as exc:  # none can be read
        return info, None, str(exc), None, None
    writes, new, names, made = objects_names_and_new_keys(data, wanted, columns)
    return info, writes, names, new, made


def _header_of(change: bytes, data: bytes) -> ChangeInfo:
    digest = hashlib.sha256(bytes([_CHUNK_CHANGE]) + uvarint(len(data)) + data).digest()
    if digest[:4] != change[4:8]:
        raise LedgerError("A change failed its checksum: it was damaged or tampered with.")
    count, pos = read_varint(data, 0)
    if pos + 32 * count > len(data):
        raise LedgerError("A change is truncated or malformed.")
    deps = tuple(data[pos + 32 * i : pos + 32 * (i + 1)] for i in range(count))
    actor_length, pos = read_varint(data, pos + 32 * count)
    if pos + actor_length > len(data):
        raise LedgerError("A change is truncated or malformed.")
    return ChangeInfo(hash=digest, deps=deps, actor=data[pos : pos + actor_length])


def change_body(change: bytes) -> bytes:
    """A change chunk's contents after its header, inflated if it was compressed (what
    :mod:`hearth.ledger.change_ops` reads); :class:`LedgerError` if it is not one."""
    return _change_body(change)


def _change_body(change: bytes) -> bytes:
    """A change chunk's contents after its header, inflated if it was compressed."""
    if len(change) < 10 or change[:4] != _CHANGE_MAGIC:
        raise LedgerError("A change is not in Automerge's format.")
    chunk_type = change[8]
    length, pos = read_varint(change, 9)
    if pos + length != len(change):
        raise LedgerError("A change has the wrong length.")
    if chunk_type == _CHUNK_CHANGE:
        data = change[pos:]
    elif chunk_type == _CHUNK_DEFLATED_CHANGE:
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(change[pos:], _MAX_INFLATED)
        except zlib.error as exc:
            raise LedgerError("A compressed change is damaged.") from exc
        if inflater.unconsumed_tail:
            raise LedgerError("A compressed change is too large.")
    else:
        raise LedgerError("A change is not a single Automerge change.")
    return data


def objects_written_by(change: bytes) -> set[ObjectRef] | None:
    """The objects a change's operations write to, read from its columns; ``None`` if
    they cannot be read (then it is assumed to write anywhere)."""
    try:
        return objects_written(_change_body(change))
    except LedgerError:
        return None


def _object_ref(exid: bytes) -> ObjectRef:
    """An object id from the binding (tag, actor, an index, counter) as change columns
    name it: (actor, counter), or ``None`` for the root map."""
    if exid == ROOT:
        return None
    length, pos = read_varint(exid, 1)
    actor = exid[pos : pos + length]
    _, pos = read_varint(exid, pos + length)
    counter, _ = read_varint(exid, pos)
    return (actor, counter)


def _sync_message(changes: Sequence[bytes]) -> Message:
    """Build the sync message that carries ``changes`` (type, heads, need, have, changes)."""
    body = bytearray([_SYNC_MESSAGE_TYPE])
    body += uvarint(0) + uvarint(0) + uvarint(0)
    body += uvarint(len(changes))
    for change in changes:
        body += uvarint(len(change)) + change
    return Message.decode(bytes(body))


class DocWriter:
    """Puts entries inside one open transaction and remembers what it touched."""

    def __init__(self, doc: Document, tx: Transaction) -> None:
        self._doc = doc
        self._tx = tx
        self.touched: set[EntryRef] = set()

    def put(self, table: str, entry_id: str, fields: Fields) -> None:
        """Create the entry if needed and set ``fields``; ``None`` deletes a field.

        A mapping value is a sub-map. Create sub-maps together with their entry: a sub-map
        created later by two devices at once would be two objects, and only one survives
        the merge.
        """
        tx = self._tx
        table_obj = self._table(table)
        found = tx.get(table_obj, entry_id)
        entry = tx.put_object(table_obj, entry_id, ObjType.Map) if found is None else found[1]
        self._put_fields(entry, fields)
        self.touched.add((table, entry_id))

    def delete(self, table: str, entry_id: str) -> None:
        """Remove an entry outright (archiving moves entries; members see tombstones)."""
        table_obj = self._table(table)
        if self._tx.get(table_obj, entry_id) is not None:
            self._tx.delete(table_obj, entry_id)
            self.touched.add((table, entry_id))

    def _table(self, table: str) -> bytes:
        found = self._tx.get(ROOT, table)
        if found is None or found[0] != ObjType.Map:
            raise LedgerError(f"This ledger has no {table!r} table; it may be from a newer Hearth.")
        obj: bytes = found[1]
        return obj

    def _put_fields(self, obj: bytes, fields: Fields) -> None:
        tx = self._tx
        for key, value in fields.items():
            if value is None:
                if tx.get(obj, key) is not None:
                    tx.delete(obj, key)
            elif isinstance(value, Mapping):
                found = tx.get(obj, key)
                if found is None or found[0] != ObjType.Map:
                    child = tx.put_object(obj, key, ObjType.Map)
                else:
                    child = found[1]
                self._put_fields(child, value)
            elif isinstance(value, bool):  # before int: bool is an int in Python
                tx.put(obj, key, ScalarType.Boolean, value)
            elif isinstance(value, int):
                try:
                    tx.put(obj, key, ScalarType.Int, value)
                except OverflowError as exc:
                    raise LedgerError(f"The number {value} is too large to store.") from exc
            else:
                tx.put(obj, key, ScalarType.Str, value)


class LedgerDoc:
    """An Automerge document seen as tables of entries."""

    def __init__(self, doc: Document) -> None:
        self._doc = doc
        self._guarded: dict[str, set[ObjectRef]] = {}  # objects_under(table), while valid
        self._table_refs: dict[ObjectRef, str] = {}  # each table's map, as changes name it
        self._known: set[bytes] | None = None  # change_ids(), once asked for

    # --- making and keeping -------------------------------------------------

    @classmethod
    def genesis(cls, seed: bytes, tables: Sequence[str], actor: bytes) -> LedgerDoc:
        """Create the document's first change, identical on every node given the same seed.

        The tables are created under an actor derived from ``seed`` so that two nodes
        creating the same document concurrently (an archive period, say) write the very
        same change instead of two rival root maps. Later edits use ``actor``.
        """
        doc = Document(actor_id=hashlib.sha256(b"hearth/v1/genesis" + seed).digest()[:16])
        with doc.transaction() as tx:
            for table in sorted(tables):
                tx.put_object(ROOT, table, ObjType.Map)
        doc.set_actor(actor)
        return cls(doc)

    @classmethod
    def load(cls, saved: bytes, actor: bytes) -> LedgerDoc:
        """Load a saved document, or raise :class:`LedgerError` if the bytes are not one."""
        try:
            doc = Document.load(saved)
        except Exception as exc:
            raise LedgerError(f"A saved ledger could not be read ({exc}).") from exc
        doc.set_actor(actor)
        return cls(doc)

    def save(self) -> bytes:
        """The whole document as bytes (a snapshot)."""
        return self._doc.save()

    @property
    def actor(self) -> bytes:
        """The actor id this document writes under."""
        return self._doc.get_actor()

    @actor.setter
    def actor(self, actor: bytes) -> None:
        self._doc.set_actor(actor)

    def heads(self) -> list[bytes]:
        """The hashes of the newest changes."""
        return self._doc.get_heads()

    # --- reading ---------------------------------------------------------------

    def tables(self) -> list[str]:
        """The names of the document's tables."""
        return self._doc.keys(ROOT)

    def entry_ids(self, table: str) -> list[str]:
        """Ids of every entry of a table."""
        obj = self._table(table)
        return [] if obj is None else self._doc.keys(obj)

    def read_entry(self, table: str, entry_id: str) -> dict[str, object] | None:
        """One entry as a plain dict (sub-maps as dicts), or ``None`` if it is not there."""
        obj = self._table(table)
        if obj is None:
            return None
        found = self._doc.get(obj, entry_id)
        if found is None or found[0] != ObjType.Map:
            return None
        return self._read_map(found[1])

    def read_table(self, table: str) -> dict[str, dict[str, object]]:
        """Every entry of a table; costs time in proportion to the table's size."""
        obj = self._table(table)
        if obj is None:
            return {}
        doc = self._doc
        out: dict[str, dict[str, object]] = {}
        for entry_id, (value, child) in zip(doc.keys(obj), doc.values(obj), strict=True):
            if value == ObjType.Map:
                out[entry_id] = self._read_map(child)
        return out

    def read_table_at(self, table: str, heads: Sequence[bytes]) -> dict[str, dict[str, object]]:
        """Every entry of a table as it was at ``heads`` (known ones): the document's own
        history read, with no copy made — cheap for a small table at any size of document.
        ``heads`` empty: before any change, so nothing."""
        if not heads:
            return {}
        at = list(heads)
        doc = self._doc
        found = doc.get(ROOT, table, at)
        if found is None or found[0] != ObjType.Map:
            return {}
        obj: bytes = found[1]
        out: dict[str, dict[str, object]] = {}
        for entry_id, (value, child) in zip(doc.keys(obj, at), doc.values(obj, at), strict=True):
            if value == ObjType.Map:
                out[entry_id] = self._read_map(child, at)
        return out

    def objects_under(self, table: str) -> set[ObjectRef]:
        """The table's own map and every map nested in it, as change columns name them
        (remembered until a change writes into one of them)."""
        if table not in self._guarded:
            self._guarded[table] = self._walk(table)
        return self._guarded[table]

    def objects_under_entry(self, table: str, entry_id: str) -> set[ObjectRef]:
        """The table's own map and the maps of one of its entries (not remembered: for
        the rare question of whether changes touch one member)."""
        table_obj = self._table(table)
        if table_obj is None:
            return set()
        return {_object_ref(table_obj), *self._objects_of([(table, entry_id)])}

    def writes_fields(
        self, changes: Sequence[bytes], table: str, entry_id: str, fields: Iterable[str]
    ) -> bool:
        """Whether any of the changes (applied or not) puts one of ``fields`` into an
        entry that exists here (an op on the entry's own map with that key)."""
        table_obj = self._table(table)
        got = None if table_obj is None else self._doc.get(table_obj, entry_id)
        if got is None or got[0] != ObjType.Map:
            return False
        entry, keys = _object_ref(got[1]), set(fields)
        try:
            return any(
                op.obj == entry and op.key in keys
                for change in changes
                for op in operations(_change_body(change))
            )
        except LedgerError:
            return False

    def writes_key_in_entry(
        self, changes: Sequence[bytes], table: str, entry_id: str, key: str
    ) -> bool:
        """Whether any of the changes (applied or not) puts ``key`` into an entry that
        exists here or into a map nested in it (a member's removal, or one device's)."""
        table_obj = self._table(table)
        if table_obj is None:
            return False
        objects = self._objects_of([(table, entry_id)])
        try:
            return any(
                op.obj in objects and op.key == key
                for change in changes
                for op in operations(_change_body(change))
            )
        except LedgerError:
            return False

    def paths_of(self, change: bytes, indexes: Iterable[int]) -> dict[int, tuple[str, ...] | None]:
        """For operations of a change (by index), the path of map keys from the root to
        the key each writes (``("events", id, "by")``), or ``None`` where that cannot be
        told. Objects the change makes are followed through its own operations; objects
        made before, through this document (whose copy must hold the change's past)."""
        try:
            ops = operations(_change_body(change))
        except LedgerError:
            return dict.fromkeys(indexes)
        made = {op.id: (op.obj, op.key) for op in ops if op.action in MAKE_ACTIONS}
        known: dict[ObjectRef, tuple[str, ...]] | None = None
        found: dict[int, tuple[str, ...] | None] = {}
        for index in indexes:
            op = ops[index] if index < len(ops) else None
            if op is None or op.key is None:
                found[index] = None
                continue
            path: list[str] = [op.key]
            obj = op.obj
            for _ in range(len(made) + 1):
                if obj not in made:
                    break
                obj, key = made[obj]
                if key is None:
                    obj = _UNKNOWN
                    break
                path.insert(0, key)
            if obj is None:
                found[index] = tuple(path)
                continue
            if known is None:
                known = self._object_paths()
            above = known.get(obj)
            found[index] = None if above is None else (*above, *path)
        return found

    def _object_paths(self) -> dict[ObjectRef, tuple[str, ...]]:
        """Every map of the document, as change columns name it, with its path of keys
        (costs a walk of the whole document: only for the rare change that needs it)."""
        found: dict[ObjectRef, tuple[str, ...]] = {None: ()}
        doc = self._doc

        def walk(obj: bytes, path: tuple[str, ...]) -> None:
            found[_object_ref(obj)] = path
            if len(path) <= MAX_DEPTH:
                for key, (value, child) in zip(doc.keys(obj), doc.values(obj), strict=True):
                    if value == ObjType.Map:
                        walk(child, (*path, key))

        for table in self.tables():
            obj = self._table(table)
            if obj is not None:
                walk(obj, (table,))
        return found

    def value_at(self, path: Sequence[str], heads: Sequence[bytes]) -> object:
        """The scalar at a path of map keys as the document was at ``heads`` (known ones),
        or ``None`` if nothing scalar was there; :class:`LedgerError` if it cannot be read."""
        if not heads:
            return None
        at = list(heads)
        obj: bytes = ROOT
        for depth, key in enumerate(path):
            try:
                found = self._doc.get(obj, key, at)
            except Exception as exc:
                raise LedgerError(f"A ledger could not be read at a past state ({exc}).") from exc
            if found is None:
                return None
            value, child = found
            if depth == len(path) - 1:
                return value[1] if isinstance(value, tuple) else None
            if value != ObjType.Map:
                return None
            obj = child
        return None

    def map_at(self, path: Sequence[str], heads: Sequence[bytes]) -> dict[str, object] | None:
        """The map at a path of map keys as the document was at ``heads`` (known ones),
        as a plain dict, or ``None`` if no map was there; :class:`LedgerError` if it
        cannot be read."""
        if not heads:
            return None
        at = list(heads)
        obj: bytes = ROOT
        try:
            for key in path:
                found = self._doc.get(obj, key, at)
                if found is None or found[0] != ObjType.Map:
                    return None
                obj = found[1]
            return self._read_map(obj, at)
        except Exception as exc:
            raise LedgerError(f"A ledger could not be read at a past state ({exc}).") from exc

    def maps_at(
        self, entries: Iterable[EntryRef], heads: Sequence[bytes], wanted: set[ObjectRef]
    ) -> dict[ObjectRef, tuple[str, ...]]:
        """The paths of keys of the ``wanted`` maps (as change columns name them) found
        among the tables' maps and the maps inside the given entries, as the document
        was at ``heads`` (known ones); read level by level, stopping once all are found."""
        found: dict[ObjectRef, tuple[str, ...]] = {}
        tables = self.table_refs()
        for ref, name in tables.items():
            if ref in wanted:
                found[ref] = (name,)
        if not heads or wanted <= found.keys():
            return found
        at, doc = list(heads), self._doc
        try:
            level: list[tuple[bytes, tuple[str, ...]]] = []
            for table, entry_id in sorted(set(entries)):
                table_obj = self._table(table)
                got = None if table_obj is None else doc.get(table_obj, entry_id, at)
                if got is not None and got[0] == ObjType.Map:
                    level.append((got[1], (table, entry_id)))
            while level and not wanted <= found.keys():
                deeper: list[tuple[bytes, tuple[str, ...]]] = []
                for obj, path in level:
                    ref = _object_ref(obj)
                    if ref in wanted:
                        found[ref] = path
                    if len(path) <= MAX_DEPTH:
                        for key, (value, child) in zip(
                            doc.keys(obj, at), doc.values(obj, at), strict=True
                        ):
                            if value == ObjType.Map:
                                deeper.append((child, (*path, key)))
                level = deeper
        except Exception as exc:
            raise LedgerError(f"A ledger could not be read at a past state ({exc}).") from exc
        return found

    def along(
        self, path: Sequence[str], keys: Sequence[str], heads: Sequence[bytes]
    ) -> tuple[list[dict[str, object]], frozenset[str]]:
        """For each map from the entry at ``path[:2]`` down to the one at ``path``, as the
        document was at ``heads`` (known ones): the scalars it held at ``keys`` (a map
        that was not there: empty); and the keys at which that last map held maps.
        :class:`LedgerError` if it cannot be read."""
        at, doc = list(heads), self._doc
        found: list[dict[str, object]] = []
        obj: bytes | None = ROOT if heads else None
        try:
            for depth, key in enumerate(path):
                got = None if obj is None else doc.get(obj, key, at)
                obj = got[1] if got is not None and got[0] == ObjType.Map else None
                if depth == 0:
                    continue
                held: dict[str, object] = {}
                if obj is not None:
                    for name in keys:
                        value = doc.get(obj, name, at)
                        if value is not None and isinstance(value[0], tuple):
                            held[name] = value[0][1]
                found.append(held)
            if obj is None:
                return found, frozenset()
            maps = frozenset(
                key
                for key, (value, _) in zip(doc.keys(obj, at), doc.values(obj, at), strict=True)
                if value == ObjType.Map
            )
        except Exception as exc:
            raise LedgerError(f"A ledger could not be read at a past state ({exc}).") from exc
        return found, maps

    def _walk(self, table: str) -> set[ObjectRef]:
        found: set[ObjectRef] = set()
        doc = self._doc

        def walk(obj: bytes, depth: int) -> None:
            found.add(_object_ref(obj))
            if depth < MAX_DEPTH:  # deeper maps are read as empty: what is in them is not
                for value, child in doc.values(obj):
                    if value == ObjType.Map:
                        walk(child, depth + 1)

        obj = self._table(table)
        if obj is not None:
            walk(obj, -1)
        return found

    def writes_under(
        self,
        tables: Iterable[str],
        changes: Sequence[bytes],
        objects: set[ObjectRef],
        written: Sequence[set[ObjectRef] | None] | None = None,
    ) -> list[bool]:
        """For each of ``changes``: whether it may write to ``tables`` (as
        :meth:`may_write` asks of ``objects``, their maps) — into one of ``objects``, the
        root, or a map ``changes`` made inside them however deep, also one no longer in
        the document (written again as a new map since), whose earlier writes
        :meth:`objects_under` cannot show; ``True`` too for a change that cannot be read.
        Each change's object columns are read once (``written``: what
        :func:`objects_written_by` said of each, if asked already); only those that write
        into such a map are read op by op."""
        names = set(tables)
        found = set(objects)
        if written is None:
            written = [objects_written_by(change) for change in changes]
        if len(written) != len(changes):
            raise ValueError("writes_under needs what each change writes, one for each")
        ops: dict[int, list[Operation]] = {}  # of the changes read so far
        grew = True
        while grew:
            grew = False
            for index, objects_of in enumerate(written):
                if objects_of is None or (objects_of.isdisjoint(found) and None not in objects_of):
                    continue
                if index not in ops:
                    try:
                        ops[index] = operations(_change_body(changes[index]))
                    except LedgerError:
                        ops[index] = []
                for op in ops[index]:
                    if (
                        op.action in MAKE_ACTIONS
                        and op.id not in found
                        and (op.obj in found if op.obj is not None else op.key in names)
                    ):
                        found.add(op.id)
                        grew = True
        return [w is None or None in w or not w.isdisjoint(found) for w in written]

    def may_write(self, changes: Sequence[bytes], objects: set[ObjectRef]) -> bool:
        """Whether any of the changes writes to one of ``objects`` or to the root map
        (where tables are made); ``True`` too when a change cannot be read that far."""
        try:
            return any(
                not written.isdisjoint(objects) or None in written
                for written in (objects_written(_change_body(c)) for c in changes)
            )
        except LedgerError:
            return True

    def entries_written(
        self, changes: Sequence[bytes], named: Iterable[EntryRef]
    ) -> set[EntryRef] | None:
        """The entries ``changes`` (not applied yet) write to, read from their operations,
        or ``None`` if that cannot be told. ``named`` is what their author says they
        touched: it is not trusted, only used to find objects the changes did not make.

        A remote device's list of what it touched decides which entries of the view are
        read again; read from the operations instead, no device can leave other nodes'
        views out of line with their documents. ``None`` (an object in no named entry, a
        write to the root, a change that cannot be read) means: read everything again.
        """
        tables = self.table_refs()
        try:
            ops = [op for change in changes for op in operations(_change_body(change))]
        except LedgerError:
            return None
        made = {op.id: (op.obj, op.key) for op in ops if op.action in MAKE_ACTIONS}
        inside: dict[ObjectRef, EntryRef] | None = None
        written: set[EntryRef] = set()
        for op in ops:
            obj, key = op.obj, op.key
            for _ in range(len(made) + 1):  # up through the objects these changes made
                if obj not in made:
                    break
                obj, key = made[obj]
            if obj in tables and key is not None:
                written.add((tables[obj], key))
                continue
            if obj is None or obj in tables:
                return None  # a write to the root, or to a table by list position
            if inside is None:
                inside = self._objects_of(named)
            if obj not in inside:
                return None
            written.add(inside[obj])
        return written

    def table_refs(self) -> dict[ObjectRef, str]:
        """Each table's map, as change columns name it, with the table's name (the
        tables are made once, by the genesis change: remembered once read)."""
        if not self._table_refs:
            for name in self.tables():
                table_obj = self._table(name)
                if table_obj is not None:
                    self._table_refs[_object_ref(table_obj)] = name
        return self._table_refs

    def _objects_of(self, entries: Iterable[EntryRef]) -> dict[ObjectRef, EntryRef]:
        """Every map object inside the given entries, as change columns name them."""
        found: dict[ObjectRef, EntryRef] = {}
        doc = self._doc

        def walk(obj: bytes, entry: EntryRef, depth: int) -> None:
            found[_object_ref(obj)] = entry
            if depth < MAX_DEPTH:  # a write deeper: "cannot be told", everything read again
                for value, child in doc.values(obj):
                    if value == ObjType.Map:
                        walk(child, entry, depth + 1)

        for table, entry_id in entries:
            obj = self._table(table)
            got = None if obj is None else self._doc.get(obj, entry_id)
            if got is not None and got[0] == ObjType.Map:
                walk(got[1], (table, entry_id), 0)
        return found

    def _table(self, table: str) -> bytes | None:
        found = self._doc.get(ROOT, table)
        if found is None or found[0] != ObjType.Map:
            return None
        obj: bytes = found[1]
        return obj

    def _read_map(
        self, obj: bytes, heads: list[bytes] | None = None, depth: int = 0
    ) -> dict[str, object]:
        doc = self._doc
        values = doc.values(obj, heads)
        if not values:  # most sub-maps (a resource's edits): one call to the binding, not two
            return {}
        out: dict[str, object] = {}
        for key, (value, child) in zip(doc.keys(obj, heads), values, strict=True):
            if isinstance(value, tuple):
                out[key] = value[1]
            elif value == ObjType.Map:
                out[key] = self._read_map(child, heads, depth + 1) if depth < MAX_DEPTH else {}
        return out

    # --- writing ----------------------------------------------------------------

    @contextmanager
    def edit(self) -> Iterator[DocWriter]:
        """One transaction: everything written inside becomes one change, or none on error.

        After the ``with`` block, :attr:`last_edit` holds the change and the touched
        entries.
        """
        before = self._doc.get_heads()
        with self._doc.transaction() as tx:
            writer = DocWriter(self._doc, tx)
            yield writer
        changes = self._doc.get_changes(before) if self._doc.get_heads() != before else []
        if any(table in self._guarded for table, _ in writer.touched):
            self._guarded.clear()
        if self._known is not None:
            self._known.update(c.hash for c in changes)
        self.last_edit = Edit(
            changes=tuple(c.bytes for c in changes), touched=frozenset(writer.touched)
        )

    last_edit: Edit = Edit(changes=(), touched=frozenset())

    # --- exchanging ----------------------------------------------------------------

    def apply(self, changes: Sequence[bytes]) -> set[bytes]:
        """Apply changes from elsewhere incrementally; return the hashes newly applied.

        Changes already known are ignored; changes whose dependencies have not arrived are
        held by Automerge until they do (they are not in the returned set yet). A damaged
        change raises :class:`LedgerError` and nothing of the batch is applied.
        """
        for change in changes:
            change_hash(change)
        if not changes:
            return set()
        if self._guarded and self.may_write(changes, set().union(*self._guarded.values())):
            self._guarded.clear()
        before = self._doc.get_heads()
        try:
            self._doc.receive_sync_message(SyncState(), _sync_message(changes))
        except Exception as exc:
            raise LedgerError(f"Changes from elsewhere could not be applied ({exc}).") from exc
        if self._doc.get_heads() == before:
            return set()
        applied = {c.hash for c in self._doc.get_changes(before)}
        if applied - {change_hash(c).hash for c in changes}:
            self._guarded.clear()  # held-back changes went in too: unread, assume the worst
        if self._known is not None:
            self._known |= applied
        return applied

    def merge(self, other: LedgerDoc) -> bool:
        """Take in everything another copy of this document has; return whether anything
        came in. ``other`` is used up: it becomes this document's own (with this one's
        actor id), because merging this copy into it costs what this copy holds, not what
        the other does — a fresh device taking in a 10,000-entry snapshot merges a handful
        of changes into it rather than 10,000 into its own (~0.02 s against ~1 s)."""
        before = self._doc.get_heads()
        actor = self._doc.get_actor()
        try:
            other._doc.merge(self._doc)
        except Exception as exc:
            raise LedgerError(f"A saved ledger could not be merged ({exc}).") from exc
        other._doc.set_actor(actor)
        self._doc = other._doc
        self._guarded.clear()
        self._table_refs.clear()
        self._known = None
        return self._doc.get_heads() != before

    def change_ids(self) -> set[bytes]:
        """The hashes of every change in the document (a few ms per thousand changes)."""
        return {c.hash for c in self._doc.get_changes([])}

    def knows(self, change: bytes) -> bool:
        """Whether a change (by hash) is in the document; fast after the first call."""
        if self._known is None:
            self._known = self.change_ids()
        return change in self._known

    def as_of(self, heads: Sequence[bytes]) -> LedgerDoc:
        """A copy of the document as it was at ``heads`` (known ones), to judge a change
        by what its author could see. Made by replaying the changes before ``heads``
        (~1 s at 10,000 entries), so only when a concurrent change makes it matter; the
        binding's own ``fork_at`` panics on some histories ("MissingOps")."""
        later = {c.hash for c in self._doc.get_changes(list(heads))}
        past = [c.bytes for c in self._doc.get_changes([]) if c.hash not in later]
        copy = LedgerDoc(Document(actor_id=self._doc.get_actor()))
        copy.apply(past)
        return copy

    def hashes_since(self, heads: Sequence[bytes]) -> set[bytes]:
        """Hashes of the changes beyond ``heads``, which must all be in the document (as
        after merging a copy with those heads: unchecked, since checking costs an index of
        every change)."""
        return {c.hash for c in self._doc.get_changes(list(heads))}

    def changes_since(self, heads: Sequence[bytes]) -> list[bytes]:
        """Change bytes the document has beyond ``heads`` (all of them for ``[]``)."""
        if heads and not all(self.knows(h) for h in heads):
            # get_changes would silently answer "everything" (AUTOMERGE.md).
            raise LedgerError("Asked for changes since a state this ledger does not know.")
        return [c.bytes for c in self._doc.get_changes(list(heads))]
