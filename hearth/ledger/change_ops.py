"""What an Automerge change writes, read from its bytes without applying it.

The binding's patches cannot be read (AUTOMERGE.md) and reading a whole table back costs
milliseconds, so to learn cheaply whether a change from another device writes into the
``members`` table, Hearth reads the object columns of the change itself. The format is
Automerge's columnar change chunk: a header (dependencies, actor, seq, start op, time,
message, other actors), then column metadata and column data. The object an operation
writes to is two run-length-encoded columns: the actor (an index into the change's actor
list) and the counter; both null means the root map. A map operation's key is the
key-string column; an operation's own id is the change's actor and its start op plus its
index, which is how the objects a change makes are named by later operations. An
operation's value is two columns: its metadata (a type code and a length, per operation)
and the raw bytes of every value one after the other.

Anything unexpected raises :class:`ChangeFormatError`; callers then assume the worst.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest
from typing import TypeVar

from hearth.errors import LedgerError

__all__ = [
    "DELETE_ACTION",
    "MAKE_ACTIONS",
    "SET_ACTION",
    "ChangeFormatError",
    "Columns",
    "KeyedValue",
    "NewKeys",
    "ObjectRef",
    "Operation",
    "keyed_values",
    "keys_written_into",
    "new_writes",
    "objects_and_new_writes",
    "objects_names_and_new_keys",
    "objects_written",
    "operations",
    "read_columns",
    "read_varint",
    "values",
    "writes_only_new",
]

ObjectRef = tuple[bytes, int] | None
"""(actor, counter) of the operation that created an object; ``None`` for the root map."""

_OBJ_ACTOR = 0 << 4 | 1  # column id 0 (object), type "actor"
_OBJ_COUNTER = 0 << 4 | 2  # column id 0 (object), type "unsigned LEB128"
_KEY_STRING = 1 << 4 | 5  # column id 1 (key), type "string"
_ACTION = 4 << 4 | 2  # column id 4 (action), type "unsigned LEB128"
_VALUE_META = 5 << 4 | 6  # column id 5 (value), type "value metadata"
_VALUE_RAW = 5 << 4 | 7  # column id 5 (value), type "value"
_PRED_COUNT = 7 << 4 | 0  # column id 7 (pred), type "group": how many values an op replaces
MAKE_ACTIONS = frozenset({0, 2, 4, 6})
"""Actions that make an object (map, list, text, table)."""
SET_ACTION = 1
"""The action that puts a scalar value at a key."""
DELETE_ACTION = 3
"""The action that deletes what is at a key."""
_DEFLATE = 0x08
_T = TypeVar("_T")
_MAX_COLUMN = 16 * 1024 * 1024


class ChangeFormatError(LedgerError):
    """A change whose columns could not be read."""


def read_varint(data: bytes, pos: int, *, signed: bool = False) -> tuple[int, int]:
    """A LEB128 number at ``pos`` (unsigned unless ``signed``) and the position after it."""
    if pos < len(data) and data[pos] < (0x40 if signed else 0x80):  # one byte, not negative
        return data[pos], pos + 1
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ChangeFormatError("A change is truncated or malformed.")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if signed and byte & 0x40:
                result -= 1 << shift
            return result, pos


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    # Most numbers in a change fit one byte, and nearly all the rest two (a value's
    # length and type): read those without the loop.
    if pos < len(data) and (byte := data[pos]) < 0x80:
        return byte, pos + 1
    if pos + 1 < len(data) and (second := data[pos + 1]) < 0x80:
        return (byte & 0x7F) | second << 7, pos + 2
    return read_varint(data, pos)


def _sleb(data: bytes, pos: int) -> tuple[int, int]:
    if pos < len(data) and (byte := data[pos]) < 0x80:
        return (byte - 0x80 if byte & 0x40 else byte), pos + 1
    return read_varint(data, pos, signed=True)


def _bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = _uleb(data, pos)
    if pos + length > len(data):
        raise ChangeFormatError("a change is truncated")
    return data[pos : pos + length], pos + length


def _rle(data: bytes) -> list[int | None]:
    """Decode a run-length-encoded column of unsigned integers."""
    return _runs(data, _uleb)


def _rle_strings(data: bytes) -> list[str | None]:
    """Decode a run-length-encoded column of UTF-8 strings."""

    def string(data: bytes, pos: int) -> tuple[str, int]:
        raw, pos = _bytes(data, pos)
        try:
            return raw.decode(), pos
        except UnicodeDecodeError as exc:
            raise ChangeFormatError("a change's key is not UTF-8") from exc

    return _runs(data, string)


def _runs(data: bytes, read: Callable[[bytes, int], tuple[_T, int]]) -> list[_T | None]:
    out: list[_T | None] = []
    pos = 0
    while pos < len(data):
        count, pos = _sleb(data, pos)
        if count > 0:
            value, pos = read(data, pos)
            out.extend([value] * count)
        elif count < 0:
            for _ in range(-count):
                value, pos = read(data, pos)
                out.append(value)
        else:
            nulls, pos = _uleb(data, pos)
            out.extend([None] * nulls)
        if len(out) > _MAX_COLUMN:
            raise ChangeFormatError("a change column is implausibly long")
    return out


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a change: the object it writes to, the map key (``None`` for a
    list position), its action, its own id (the object it makes, if it makes one), and
    how many values already there it replaces or deletes (0: it writes a new key)."""

    obj: ObjectRef
    key: str | None
    action: int
    id: tuple[bytes, int]
    preds: int = 0


Columns = tuple[list[bytes], bytes, int, dict[int, bytes]]
"""A change's actors (its own first), its actor, start op and column data."""


def read_columns(body: bytes) -> Columns:
    """A change's columns (``body`` as for :func:`objects_written`), to read more than
    one thing from them without reading them again."""
    return _columns(body)


def objects_written(body: bytes, columns: Columns | None = None) -> set[ObjectRef]:
    """The objects the operations of one change write to.

    ``body`` is the change chunk's contents after its header bytes (magic, checksum,
    type, length), inflated if the chunk was compressed. Reads only the object and action
    columns (a snapshot's check asks this of every change it covers), run by run rather
    than operation by operation: what :func:`operations` would name, without listing them.
    ``columns``: the body's :func:`read_columns`, when read already.
    """
    actors, _, _, data = columns if columns is not None else _columns(body)
    actions = _run_lengths(data.get(_ACTION, b""))
    obj_actors = _run_lengths(data.get(_OBJ_ACTOR, b""))
    counters = _run_lengths(data.get(_OBJ_COUNTER, b""))
    ops, objects = _total(actions), max(_total(obj_actors), _total(counters))
    if objects > ops or any(value is None for _, value in actions):
        raise ChangeFormatError("a change has more objects than operations")
    found: set[ObjectRef] = set()
    for obj_actor, counter in _paired(obj_actors, counters):
        if obj_actor is None and counter is None:
            found.add(None)
        elif obj_actor is None or counter is None or obj_actor >= len(actors):
            raise ChangeFormatError("a change names an object it cannot")
        else:
            found.add((actors[obj_actor], counter))
    if ops > objects:
        found.add(None)  # short object columns: the root map
    return found


def objects_and_new_writes(
    body: bytes, columns: Columns | None = None
) -> tuple[set[ObjectRef], frozenset[ObjectRef] | None]:
    """:func:`objects_written` and :func:`new_writes` of one change at once, its columns'
    runs read once; :class:`ChangeFormatError` as :func:`objects_written` raises it."""
    actors, _, start_op, data = columns if columns is not None else _columns(body)
    found, new, _ = _objects_and_new(actors, start_op, data)
    return found, new


def _objects_and_new(
    actors: list[bytes], start_op: int, data: dict[int, bytes]
) -> tuple[set[ObjectRef], frozenset[ObjectRef] | None, tuple[_Runs, _Runs, _Runs]]:
    """:func:`objects_and_new_writes`, and the runs of the action and object columns it
    read."""
    actions = _run_lengths(data.get(_ACTION, b""))
    obj_actors = _run_lengths(data.get(_OBJ_ACTOR, b""))
    counters = _run_lengths(data.get(_OBJ_COUNTER, b""))
    ops, objects = _total(actions), max(_total(obj_actors), _total(counters))
    if objects > ops or any(value is None for _, value in actions):
        raise ChangeFormatError("a change has more objects than operations")
    try:
        preds = _run_lengths(data.get(_PRED_COUNT, b""))
    except ChangeFormatError:  # what it replaces is unread: judged operation by operation
        preds = [(1, 1)]
    only_new = not any(count and value for count, value in preds)
    found: set[ObjectRef] = set()
    outside: set[ObjectRef] = set()
    for obj_actor, counter in _paired(obj_actors, counters):
        if obj_actor is None and counter is None:
            found.add(None)
            only_new = False
        elif obj_actor is None or counter is None or obj_actor >= len(actors):
            raise ChangeFormatError("a change names an object it cannot")
        else:
            ref = (actors[obj_actor], counter)
            found.add(ref)
            if not (obj_actor == 0 and counter >= start_op):
                outside.add(ref)
    if ops > objects:
        found.add(None)  # short object columns: the root map
        only_new = False
    return found, frozenset(outside) if only_new else None, (actions, obj_actors, counters)


@dataclass(frozen=True, slots=True)
class NewKeys:
    """What R2a's entry tags ask of a change that writes only new keys
    (:func:`new_writes` is not ``None``): ``ops``, its operations into the objects it
    did not make itself (what :func:`keys_written_into` of those objects lists), and
    ``made_from``, its actor and start op (the objects it makes are that actor's from
    that counter on). What it puts at ``handoff``, asked only of a commitment under an
    untagged id (rare: a neighbourhood handoff's), is read from the change when asked."""

    ops: tuple[Operation, ...]
    made_from: tuple[bytes, int]


def objects_names_and_new_keys(
    body: bytes, wanted: frozenset[str], columns: Columns | None = None
) -> tuple[
    set[ObjectRef] | None,
    frozenset[ObjectRef] | None,
    list[KeyedValue] | str,
    NewKeys | None,
]:
    """What opening a snapshot's bundles reads of every change, each column read once:
    :func:`objects_and_new_writes` (both ``None`` if the object columns cannot be read),
    :func:`keyed_values` of ``wanted`` (or why they cannot be read), and, for a change
    writing only new keys, its :class:`NewKeys` (else ``None``)."""
    actors, actor, start_op, data = columns if columns is not None else _columns(body)
    writes: set[ObjectRef] | None = None
    new: frozenset[ObjectRef] | None = None
    runs: tuple[_Runs, _Runs, _Runs] | None = None
    with contextlib.suppress(ChangeFormatError):  # the names are read all the same
        writes, new, runs = _objects_and_new(actors, start_op, data)
    into = _indices_into(runs[1], runs[2], actors, new) if runs is not None and new else []
    try:
        names, keys, actions = _keyed_values(data, _encoded(wanted), {i for i, _ in into})
    except ChangeFormatError as exc:
        return writes, new, str(exc), None
    if runs is None or new is None:
        return writes, new, names, None
    if into and actions is None:
        actions = _expanded(runs[0])
    try:
        ops = tuple(
            Operation(obj, _key(keys, index), _action(actions, index), (actor, start_op + index))
            for index, obj in into
        )
    except ChangeFormatError:  # the checks read it again, and refuse it
        return writes, new, names, None
    return writes, new, names, NewKeys(ops, (actor, start_op))


def _key(keys: dict[int, bytes], index: int) -> str | None:
    raw = keys.get(index)
    return None if raw is None else _utf8(raw)


def _action(actions: list[int | None] | None, index: int) -> int:
    action = actions[index] if actions is not None and index < len(actions) else None
    if action is None:
        raise ChangeFormatError("a change has an operation with no action")
    return action


def _expanded(runs: _Runs) -> list[int | None]:
    out: list[int | None] = []
    for count, value in runs:
        out.extend([value] * count)
    return out


def writes_only_new(
    body: bytes, known: frozenset[ObjectRef], columns: Columns | None = None
) -> bool:
    """Whether every operation of one change writes a new key (it replaces and deletes
    nothing) into one of the ``known`` objects or into an object the change makes itself
    (``body`` as for :func:`objects_written`): what most changes do, told from the run
    lengths of three columns without listing the operations. ``columns``: the body's
    :func:`read_columns`, when read already."""
    outside = new_writes(body, columns)
    return outside is not None and outside <= known


def new_writes(body: bytes, columns: Columns | None = None) -> frozenset[ObjectRef] | None:
    """The objects, other than those it makes itself, that one change writes only new
    keys into — ``None`` if it replaces or deletes anything, or writes to the root map
    (``body`` as for :func:`objects_written`). :func:`writes_only_new` of ``known`` is
    whether this is a subset of ``known``: read once, when a bundle is opened, it answers
    that for any ``known`` without reading the change again.
    ``columns``: the body's :func:`read_columns`, when read already."""
    actors, _, start_op, data = columns if columns is not None else _columns(body)
    if any(count and value for count, value in _run_lengths(data.get(_PRED_COUNT, b""))):
        return None
    obj_actors = _run_lengths(data.get(_OBJ_ACTOR, b""))
    counters = _run_lengths(data.get(_OBJ_COUNTER, b""))
    ops = _total(_run_lengths(data.get(_ACTION, b"")))
    if ops > max(_total(obj_actors), _total(counters)):
        return None  # short object columns: the root map
    outside: set[ObjectRef] = set()
    for obj_actor, counter in _paired(obj_actors, counters):
        if obj_actor is None or counter is None or obj_actor >= len(actors):
            return None
        if not (obj_actor == 0 and counter >= start_op):
            outside.add((actors[obj_actor], counter))
    return frozenset(outside)


def keys_written_into(columns: Columns, objects: frozenset[ObjectRef]) -> list[Operation]:
    """The operations of one change that write at a map key of one of ``objects`` (read
    from its :func:`read_columns`): what :func:`operations` would list of them, read run
    by run without listing the others (a snapshot's check asks this of every change it
    covers)."""
    actors, actor, start_op, data = columns
    into = _indices_into(
        _run_lengths(data.get(_OBJ_ACTOR, b"")),
        _run_lengths(data.get(_OBJ_COUNTER, b"")),
        actors,
        objects,
    )
    if not into:
        return []
    keys = _strings_at(data.get(_KEY_STRING, b""), {index for index, _ in into})
    actions = _rle(data.get(_ACTION, b""))
    preds = _rle(data.get(_PRED_COUNT, b""))
    found = []
    for index, obj in into:
        action = actions[index] if index < len(actions) else None
        if action is None:
            raise ChangeFormatError("a change has an operation with no action")
        replaced = (preds[index] if index < len(preds) else None) or 0
        op_id = (actor, start_op + index)
        found.append(Operation(obj, keys.get(index), action, op_id, replaced))
    return found


def _indices_into(
    first: _Runs, second: _Runs, actors: list[bytes], objects: frozenset[ObjectRef]
) -> list[tuple[int, ObjectRef]]:
    """The operations (index, object) whose object columns (actor runs ``first``, counter
    runs ``second``) name one of ``objects``."""
    first = [run for run in first if run[0] > 0]
    second = [run for run in second if run[0] > 0]
    found: list[tuple[int, ObjectRef]] = []
    i = j = index = 0
    left = first[0][0] if first else 0
    right = second[0][0] if second else 0
    while i < len(first) and j < len(second):
        step = min(left, right)
        obj_actor, counter = first[i][1], second[j][1]
        if obj_actor is not None and counter is not None and obj_actor < len(actors):
            ref = (actors[obj_actor], counter)
            if ref in objects:
                found.extend((k, ref) for k in range(index, index + step))
        index += step
        left -= step
        right -= step
        if not left:
            i += 1
            left = first[i][0] if i < len(first) else 0
        if not right:
            j += 1
            right = second[j][0] if j < len(second) else 0
    return found


def _strings_at(column: bytes, wanted: set[int]) -> dict[int, str]:
    """The entries of a run-length-encoded string column at the ``wanted`` indices,
    decoding no others."""
    found: dict[int, str] = {}
    last = max(wanted)
    pos = index = 0
    while pos < len(column) and index <= last:
        count, pos = _sleb(column, pos)
        if count > 0:
            raw, pos = _bytes(column, pos)
            hits = [i for i in range(index, index + count) if i in wanted]
            if hits:
                key = _utf8(raw)
                found.update((i, key) for i in hits)
            index += count
        elif count < 0:
            for _ in range(-count):
                raw, pos = _bytes(column, pos)
                if index in wanted:
                    found[index] = _utf8(raw)
                index += 1
        else:
            nulls, pos = _uleb(column, pos)
            index += nulls
    return found


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise ChangeFormatError("a change's key is not UTF-8") from exc


_Runs = list[tuple[int, int | None]]


def _run_lengths(data: bytes) -> _Runs:
    """A run-length-encoded column of unsigned integers as (count, value) runs, a literal
    run as runs of one; what :func:`_rle` lists, without listing it."""
    out: _Runs = []
    pos = total = 0
    while pos < len(data):
        count, pos = _sleb(data, pos)
        if count > 0:
            value, pos = _uleb(data, pos)
            out.append((count, value))
        elif count < 0:
            for _ in range(-count):
                value, pos = _uleb(data, pos)
                out.append((1, value))
        else:
            count, pos = _uleb(data, pos)
            out.append((count, None))
        total += abs(count)
        if total > _MAX_COLUMN:
            raise ChangeFormatError("a change column is implausibly long")
    return out


def _total(runs: _Runs) -> int:
    return sum(count for count, _ in runs)


def _paired(first: _Runs, second: _Runs) -> set[tuple[int | None, int | None]]:
    """The distinct (first, second) values of two columns read side by side, the shorter
    one padded with nulls (as :func:`itertools.zip_longest` pairs them)."""
    first = [run for run in first if run[0] > 0]
    second = [run for run in second if run[0] > 0]
    pairs: set[tuple[int | None, int | None]] = set()
    i = j = 0
    left = first[0][0] if first else 0
    right = second[0][0] if second else 0
    while i < len(first) or j < len(second):
        pairs.add(
            (first[i][1] if i < len(first) else None, second[j][1] if j < len(second) else None)
        )
        if i >= len(first):
            step = right
        elif j >= len(second):
            step = left
        else:
            step = min(left, right)
        if i < len(first):
            left -= step
            if not left:
                i += 1
                left = first[i][0] if i < len(first) else 0
        if j < len(second):
            right -= step
            if not right:
                j += 1
                right = second[j][0] if j < len(second) else 0
    return pairs


def _columns(body: bytes) -> Columns:
    """A change's actors (its own first), its actor, start op and column data."""
    count, pos = _uleb(body, 0)
    pos += 32 * count  # dependencies
    actor, pos = _bytes(body, pos)
    _, pos = _uleb(body, pos)  # seq
    start_op, pos = _uleb(body, pos)
    _, pos = _sleb(body, pos)  # time
    _, pos = _bytes(body, pos)  # message
    others, pos = _uleb(body, pos)
    actors = [actor]
    for _ in range(others):
        other, pos = _bytes(body, pos)
        actors.append(other)
    columns, pos = _uleb(body, pos)
    specs = []
    for _ in range(columns):
        spec, pos = _uleb(body, pos)
        length, pos = _uleb(body, pos)
        specs.append((spec, length))
    data: dict[int, bytes] = {}
    for spec, length in specs:
        if pos + length > len(body):
            raise ChangeFormatError("a change's columns are truncated")
        chunk = body[pos : pos + length]
        pos += length
        if spec & _DEFLATE:
            try:
                chunk = zlib.decompress(chunk, -15)
            except zlib.error as exc:
                raise ChangeFormatError("a change's compressed column is damaged") from exc
        data[spec & ~_DEFLATE] = chunk
    return actors, actor, start_op, data


def operations(body: bytes) -> list[Operation]:
    """The operations of one change (``body`` as for :func:`objects_written`)."""
    actors, actor, start_op, data = _columns(body)
    actions = _rle(data.get(_ACTION, b""))
    objects = zip_longest(_rle(data.get(_OBJ_ACTOR, b"")), _rle(data.get(_OBJ_COUNTER, b"")))
    keys = _rle_strings(data.get(_KEY_STRING, b""))
    preds = _rle(data.get(_PRED_COUNT, b""))
    found = []
    for index, ((obj_actor, counter), action) in enumerate(
        zip_longest(objects, actions, fillvalue=(None, None))
    ):
        if isinstance(action, tuple) or action is None:
            raise ChangeFormatError("a change has more objects than operations")
        if obj_actor is None and counter is None:
            obj: ObjectRef = None  # absent (or short) object columns: the root map
        elif obj_actor is None or counter is None or obj_actor >= len(actors):
            raise ChangeFormatError("a change names an object it cannot")
        else:
            obj = (actors[obj_actor], counter)
        key = keys[index] if index < len(keys) else None
        replaced = (preds[index] if index < len(preds) else None) or 0
        found.append(Operation(obj, key, action, (actor, start_op + index), replaced))
    return found


@dataclass(frozen=True, slots=True)
class KeyedValue:
    """An operation of a change at one of the map keys asked about: its index among the
    change's operations, the key, its action and, for a put, its scalar value (a string,
    an integer, a boolean, ``None``; other types as :class:`bytes`)."""

    index: int
    key: str
    action: int
    value: str | int | bool | bytes | None


def keyed_values(
    body: bytes, wanted: frozenset[str], columns: Columns | None = None
) -> list[KeyedValue]:
    """The operations of one change at a map key in ``wanted``, with their values
    (``body`` as for :func:`objects_written`). Reads the key, action and value columns;
    only the keys and values of the operations asked about are decoded (a snapshot's
    check asks this of every change it covers: the loops are written for speed).
    ``columns``: the body's :func:`read_columns`, when read already."""
    _, _, _, data = columns if columns is not None else _columns(body)
    return _keyed_values(data, _encoded(wanted), set())[0]


def _keyed_values(
    data: dict[int, bytes], wanted: dict[bytes, str], at: set[int]
) -> tuple[list[KeyedValue], dict[int, bytes], list[int | None] | None]:
    """:func:`keyed_values` of the keys ``wanted`` (by their UTF-8) from a change's column
    data, the keys at the ``at`` indices (as UTF-8) read in the same pass, and the
    action column when it was read for them."""
    hits, keys, named = _key_hits(data.get(_KEY_STRING, b""), wanted, at)
    if not hits:
        return [], named, None
    actions = _rle(data.get(_ACTION, b""))
    lengths = _meta_lengths(data.get(_VALUE_META, b""))
    raw = data.get(_VALUE_RAW, b"")
    if keys > len(actions) or len(lengths) > len(actions):
        raise ChangeFormatError("a change has more keys or values than operations")
    found = []
    starts: list[int] = []
    total = 0
    for meta in lengths:
        starts.append(total)
        total += meta >> 4
    if total > len(raw):
        raise ChangeFormatError("a change's values are truncated")
    for index, key in hits:
        action = actions[index]
        if action is None:
            raise ChangeFormatError("a change has an operation with no action")
        value: str | int | bool | bytes | None = None
        if index < len(lengths):
            start = starts[index]
            value = _value(lengths[index] & 0x0F, raw[start : start + (lengths[index] >> 4)])
        found.append(KeyedValue(index, key, action, value))
    return found, named, actions


def values(body: bytes) -> list[str | int | bool | bytes | None]:
    """The scalar value of every operation of one change, in order (``None`` for an
    operation that puts none: a deletion, a map made; ``body`` as for
    :func:`objects_written`)."""
    _, _, _, data = _columns(body)
    lengths = _meta_lengths(data.get(_VALUE_META, b""))
    raw = data.get(_VALUE_RAW, b"")
    found: list[str | int | bool | bytes | None] = []
    start = 0
    for meta in lengths:
        end = start + (meta >> 4)
        if end > len(raw):
            raise ChangeFormatError("a change's values are truncated")
        found.append(_value(meta & 0x0F, raw[start:end]))
        start = end
    return found


@lru_cache(maxsize=8)
def _encoded(wanted: frozenset[str]) -> dict[bytes, str]:
    return {key.encode(): key for key in wanted}


def _key_hits(
    column: bytes, wanted: dict[bytes, str], at: set[int]
) -> tuple[list[tuple[int, str]], int, dict[int, bytes]]:
    """The operations (index, key) whose key-string column entry is one of ``wanted``
    (as UTF-8), how many entries the column holds, and the keys at the ``at`` indices
    as UTF-8 (``None`` ones left out)."""
    hits: list[tuple[int, str]] = []
    named: dict[int, bytes] = {}
    pos = index = 0
    end = len(column)
    first, last = (min(at), max(at)) if at else (0, -1)
    while pos < end:
        count, pos = _sleb(column, pos)
        if count > 0:
            length, pos = _uleb(column, pos)
            raw = column[pos : pos + length]
            key = wanted.get(raw)
            pos += length
            if key is not None:
                hits.extend((i, key) for i in range(index, index + count))
            if index <= last and index + count > first:
                inside = [i for i in at if index <= i < index + count]
                named.update((i, raw) for i in inside)
            index += count
        elif count < 0:
            for _ in range(-count):
                length, pos = _uleb(column, pos)
                raw = column[pos : pos + length]
                key = wanted.get(raw)
                pos += length
                if key is not None:
                    hits.append((index, key))
                if index <= last and index in at:
                    named[index] = raw
                index += 1
        else:
            nulls, pos = _uleb(column, pos)
            index += nulls
        if pos > end or index > _MAX_COLUMN:
            raise ChangeFormatError("a change's keys are truncated or implausibly many")
    return hits, index, named


def _meta_lengths(column: bytes) -> list[int]:
    """The value-metadata column: per operation, its value's length << 4 | type code."""
    return [0 if value is None else value for value in _runs(column, _uleb)]


def _value(kind: int, raw: bytes) -> str | int | bool | bytes | None:
    """One scalar value from its type code and raw bytes."""
    if kind == 0:
        return None
    if kind in (1, 2):
        return kind == 2
    if kind in (3, 4):
        number, end = read_varint(raw, 0, signed=kind == 4)
        if end != len(raw):
            raise ChangeFormatError("a change's number value is malformed")
        return number
    if kind == 6:
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise ChangeFormatError("a change's text value is not UTF-8") from exc
    return bytes(raw)  # a float, bytes, a counter, a timestamp: not a name, nor a number
