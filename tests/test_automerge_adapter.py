"""Pins every fact of AUTOMERGE.md about the binding, and the adapter built on them.

If a newer binding changes one of these facts, the test that fails names the fact, and
``hearth/ledger/automerge_doc.py`` is the one file to revisit.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from datetime import datetime

import automerge
import pytest
from automerge.core import ROOT, Document, Message, ObjType, ScalarType, SyncState
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hearth.errors import LedgerError
from hearth.ledger.attribution import ATTRIBUTION_KEYS
from hearth.ledger.automerge_doc import LedgerDoc, _change_body, _sync_message, change_hash
from hearth.ledger.change_ops import (
    ObjectRef,
    keyed_values,
    keys_written_into,
    new_writes,
    objects_and_new_writes,
    objects_names_and_new_keys,
    objects_written,
    operations,
    read_columns,
    writes_only_new,
)

TABLES = ("items", "meta")


def run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    """Run binding code that may crash the interpreter in a child process."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _doc_with_item() -> tuple[Document, bytes]:
    doc = Document()
    with doc.transaction() as tx:
        item = tx.put_object(ROOT, "item", ObjType.Map)
        tx.put(item, "name", ScalarType.Str, "drill")
    return doc, item


# --- facts about the binding --------------------------------------------------------


def test_binding_version_is_the_pinned_one() -> None:
    from importlib.metadata import version

    assert version("automerge") == "0.2.0.dev4"


def test_counter_put_panics() -> None:
    proc = run_isolated(
        """
        from automerge.core import Document, ROOT, ScalarType
        d = Document()
        try:
            with d.transaction() as tx:
                tx.put(ROOT, "n", ScalarType.Counter, 1)
        except BaseException as e:
            print("raised", type(e).__name__)
        """
    )
    # Either a Python-visible panic or a crashed interpreter: never a working counter.
    assert "raised" in proc.stdout or proc.returncode != 0


def test_change_metadata_is_empty() -> None:
    doc, _ = _doc_with_item()
    change = doc.get_changes([])[0]
    assert change.message is None
    assert change.timestamp.timestamp() in (0, datetime(1970, 1, 1).timestamp())  # noqa: DTZ001


def test_timestamps_come_back_naive() -> None:
    doc = Document()
    with doc.transaction() as tx:
        tx.put(ROOT, "t", ScalarType.Timestamp, datetime.fromtimestamp(1_700_000_000))  # noqa: DTZ006
    value = doc.get(ROOT, "t")
    assert value is not None
    assert isinstance(value[0], tuple)
    assert value[0][1].tzinfo is None


def test_patches_have_no_readable_attributes() -> None:
    doc, item = _doc_with_item()
    before = doc.get_heads()
    with doc.transaction() as tx:
        tx.put(item, "name", ScalarType.Str, "saw")
    patches = doc.diff(before, doc.get_heads())
    assert patches
    public = [a for a in dir(patches[0]) if not a.startswith("_")]
    assert public == []


def test_there_is_no_incremental_load() -> None:
    assert not hasattr(Document, "apply_changes")
    assert not hasattr(Document, "load_incremental")


def test_receive_sync_message_applies_handbuilt_changes_and_queues_missing_deps() -> None:
    source, item = _doc_with_item()
    first = source.get_changes([])[0].bytes
    heads = source.get_heads()
    with source.transaction() as tx:
        tx.put(item, "name", ScalarType.Str, "saw")
    second = source.get_changes(heads)[0].bytes

    target = Document()
    target.receive_sync_message(SyncState(), _sync_message([second]))
    assert target.get_heads() == []  # held back: its dependency has not arrived
    target.receive_sync_message(SyncState(), _sync_message([first]))
    assert target.get_heads() == source.get_heads()


def test_scalar_type_errors() -> None:
    doc = Document()
    with pytest.raises(OverflowError), doc.transaction() as tx:
        tx.put(ROOT, "n", ScalarType.Int, 2**64)
    with pytest.raises(OverflowError), doc.transaction() as tx:
        tx.put(ROOT, "n", ScalarType.Uint, -1)
    with pytest.raises(TypeError), doc.transaction() as tx:
        tx.put(ROOT, "n", ScalarType.Int, "three")


def test_exception_in_transaction_rolls_back() -> None:
    doc = Document()
    with pytest.raises(RuntimeError), doc.transaction() as tx:
        tx.put(ROOT, "n", ScalarType.Int, 1)
        raise RuntimeError("stop")
    assert doc.get(ROOT, "n") is None
    assert doc.get_heads() == []


def test_nested_transactions_raise() -> None:
    doc = Document()
    with pytest.raises(Exception), doc.transaction(), doc.transaction():  # noqa: B017, PT011
        pass


def test_load_of_garbage_raises_plain_exception() -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the binding raises only Exception
        Document.load(b"garbage bytes")
    assert type(info.value) is Exception


def test_get_changes_with_unknown_hash_returns_everything() -> None:
    doc, _ = _doc_with_item()
    assert len(doc.get_changes([b"\x00" * 32])) == len(doc.get_changes([]))


def test_sync_state_cannot_be_saved() -> None:
    state = SyncState()
    assert not any(hasattr(state, name) for name in ("encode", "save", "to_bytes"))


def test_heads_are_32_byte_hashes() -> None:
    doc, _ = _doc_with_item()
    assert [len(h) for h in doc.get_heads()] == [32]


def test_repo_layer_exists_but_is_not_used_by_hearth() -> None:
    import importlib.util

    assert importlib.util.find_spec("automerge.repo") is not None
    assert automerge.core is not None


# --- the adapter ----------------------------------------------------------------------


def test_genesis_is_identical_for_the_same_seed() -> None:
    a = LedgerDoc.genesis(b"seed", TABLES, b"\x01" * 16)
    b = LedgerDoc.genesis(b"seed", TABLES, b"\x02" * 16)
    c = LedgerDoc.genesis(b"other", TABLES, b"\x01" * 16)
    assert a.heads() == b.heads() != c.heads()
    assert a.actor == b"\x01" * 16


def test_edit_reports_changes_and_touched_entries() -> None:
    doc = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    with doc.edit() as w:
        w.put("items", "a", {"name": "ladder", "n": 3, "ok": True, "sub": {"x": {"y": "z"}}})
        w.put("items", "b", {"name": "saw"})
    edit = doc.last_edit
    assert len(edit.changes) == 1
    assert edit.touched == {("items", "a"), ("items", "b")}
    assert doc.read_entry("items", "a") == {
        "name": "ladder",
        "n": 3,
        "ok": True,
        "sub": {"x": {"y": "z"}},
    }
    assert doc.read_entry("items", "missing") is None
    assert set(doc.read_table("items")) == {"a", "b"}


def test_none_deletes_a_field_and_booleans_stay_booleans() -> None:
    doc = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    with doc.edit() as w:
        w.put("items", "a", {"name": "x", "flag": False})
    with doc.edit() as w:
        w.put("items", "a", {"name": None})
    assert doc.read_entry("items", "a") == {"flag": False}


def test_failed_edit_changes_nothing() -> None:
    doc = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    heads = doc.heads()
    with pytest.raises(LedgerError), doc.edit() as w:
        w.put("items", "a", {"n": 2**70})
    assert doc.heads() == heads
    with pytest.raises(LedgerError), doc.edit() as w:
        w.put("no-such-table", "a", {"n": 1})
    assert doc.heads() == heads


def test_apply_is_incremental_idempotent_and_order_free() -> None:
    a = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    for i in range(3):
        with a.edit() as w:
            w.put("items", f"e{i}", {"i": i})
    changes = a.changes_since([])
    b = LedgerDoc.genesis(b"s", TABLES, b"\x02" * 16)
    assert len(b.apply(list(reversed(changes)))) == 3  # the shared genesis was known
    assert b.apply(changes) == set()
    assert b.heads() == a.heads()
    assert b.read_table("items") == a.read_table("items")


def test_merge_takes_in_the_other_copy_and_keeps_our_actor() -> None:
    ours = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    with ours.edit() as w:
        w.put("items", "mine", {"n": 1})
    theirs = LedgerDoc.genesis(b"s", TABLES, b"\x02" * 16)
    for i in range(3):
        with theirs.edit() as w:
            w.put("items", f"t{i}", {"n": i})
    copy = LedgerDoc.load(theirs.save(), b"\x03" * 16)
    assert ours.knows(ours.heads()[0])  # an index built before the merge must not linger
    assert ours.merge(copy)
    assert set(ours.read_table("items")) == {"mine", "t0", "t1", "t2"}
    assert ours.actor == b"\x01" * 16
    assert all(ours.knows(h) for h in theirs.heads())
    with ours.edit() as w:
        w.put("items", "after", {"n": 9})
    assert change_hash(ours.last_edit.changes[0]).actor == b"\x01" * 16
    assert not ours.merge(LedgerDoc.load(theirs.save(), b"\x03" * 16))  # nothing new


def test_as_of_gives_the_document_as_it_was_at_some_heads() -> None:
    doc = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    with doc.edit() as w:
        w.put("items", "a", {"n": 1})
    then = doc.heads()
    with doc.edit() as w:
        w.put("items", "a", {"n": 2})
        w.put("items", "b", {"n": 3})
    past = doc.as_of(then)
    assert past.read_table("items") == {"a": {"n": 1}}
    assert past.heads() == then
    assert doc.read_table("items") == {"a": {"n": 2}, "b": {"n": 3}}  # untouched


def test_damaged_changes_are_refused_before_anything_applies() -> None:
    a = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    with a.edit() as w:
        w.put("items", "x", {"name": "drill"})
    good = a.last_edit.changes[0]
    b = LedgerDoc.genesis(b"s", TABLES, b"\x02" * 16)
    heads = b.heads()
    for bad in (good[:-1], good[:20], b"garbage!!!!!", bytes([good[0] ^ 1]) + good[1:]):
        with pytest.raises(LedgerError):
            b.apply([bad])
    flipped = bytearray(good)
    flipped[-3] ^= 0x10
    with pytest.raises(LedgerError, match="checksum"):
        b.apply([good, bytes(flipped)])
    assert b.heads() == heads


def test_compressed_changes_hash_like_the_binding() -> None:
    doc = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    with doc.edit() as w:
        w.put("items", "big", {f"k{i}": f"value number {i}" for i in range(80)})
    data = doc.last_edit.changes[0]
    assert data[8] == 2  # deflated
    raw = Document.load(doc.save()).get_changes([])
    assert change_hash(data).hash in {c.hash for c in raw}


def test_changes_since_unknown_heads_is_an_error() -> None:
    doc = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    with pytest.raises(LedgerError, match="does not know"):
        doc.changes_since([b"\x00" * 32])
    assert doc.changes_since(doc.heads()) == []


def test_load_garbage_is_a_ledger_error() -> None:
    with pytest.raises(LedgerError):
        LedgerDoc.load(b"not a document", b"\x01" * 16)


def test_sync_message_round_trips_through_the_binding() -> None:
    message = _sync_message([])
    assert isinstance(message, Message)
    assert message.encode()[0] == 0x42


def test_save_keeps_changes_still_waiting_for_dependencies() -> None:
    """Not in AUTOMERGE.md, found here: a saved document carries its queued changes."""
    a = LedgerDoc.genesis(b"s", TABLES, b"\x01" * 16)
    with a.edit() as w:
        w.put("items", "1", {"n": 1})
    first = a.last_edit.changes[0]
    with a.edit() as w:
        w.put("items", "2", {"n": 2})
    second = a.last_edit.changes[0]
    b = LedgerDoc.genesis(b"s", TABLES, b"\x02" * 16)
    assert b.apply([second]) == set()
    reloaded = LedgerDoc.load(b.save(), b"\x03" * 16)
    assert len(reloaded.apply([first])) == 2
    assert set(reloaded.read_table("items")) == {"1", "2"}


def test_which_objects_a_change_writes_is_read_from_its_bytes() -> None:
    from hearth.ledger.automerge_doc import LedgerDoc
    from hearth.ledger.model import TABLES

    doc = LedgerDoc.genesis(b"s" * 32, TABLES, b"a" * 16)
    members = doc.objects_under("members")
    assert len(members) == 1  # the table's own map, as the change columns name it
    with doc.edit() as w:
        w.put("resources", "r1", {"name": "Saw"})
    elsewhere = doc.last_edit.changes[0]
    assert not doc.may_write([elsewhere], members)
    assert doc.may_write([elsewhere[:-3]], members)  # cannot be read: assume the worst
    with doc.edit() as w:
        w.put("members", "m1", {"name": "Ann", "devices": {"d1": {"key": "aa"}}})
    assert doc.may_write(doc.last_edit.changes, members)
    nested = doc.objects_under("members")  # the cache was dropped: the new maps are in
    assert len(nested) == 4
    with doc.edit() as w:
        w.put("members", "m1", {"devices": {"d1": {"key": "bb"}}})  # deep inside
    assert doc.may_write(doc.last_edit.changes, nested)


def test_the_entries_a_change_writes_are_read_from_its_operations() -> None:
    """What a remote device's changes write is found from their own operations; its own
    list of what it touched only helps to find objects made before (a wrong one gives
    ``None``: the reader must read everything again)."""
    a = LedgerDoc.genesis(b"s" * 32, ["resources", "events"], b"\x01" * 16)
    b = LedgerDoc.load(a.save(), b"\x02" * 16)
    start = b.heads()
    with b.edit() as w:
        w.put("resources", "saw", {"name": "Saw", "edits": {"by": "ben"}})
        w.put("events", "e1", {"action": "added"})
    made = b.changes_since(start)
    assert a.entries_written(made, []) == {("resources", "saw"), ("events", "e1")}
    a.apply(made)
    start = b.heads()
    with b.edit() as w:
        w.put("resources", "saw", {"note": "sharp", "edits": {"by": "cat"}})
    edited = b.changes_since(start)
    assert a.entries_written(edited, [("resources", "saw")]) == {("resources", "saw")}
    assert a.entries_written(edited, [("events", "e1")]) is None
    assert a.entries_written(edited, []) is None
    assert a.entries_written([b"not a change"], []) is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3))
@example([])
def test_what_a_change_writes_is_read_as_its_operations_name_it(
    edits: list[tuple[int, int]],
) -> None:
    """objects_written reads the object columns run by run (a snapshot's check asks it
    of every change it covers): it names what the operations, read one by one, write to,
    or refuses the change — also a damaged one."""
    doc = LedgerDoc.genesis(b"seed", ("resources", "members"), bytes(16))
    with doc.edit() as w:
        w.put("resources", "r" * 32, {"name": "Ladder", "where": {"shelf": "top"}})
        w.put("members", "m" * 32, {"role": "member"})
    body = bytearray(_change_body(doc.last_edit.changes[0]))
    for position, byte in edits:
        if position < len(body):
            body[position] = byte
    try:
        written = objects_written(bytes(body))
    except LedgerError:
        assert edits, "an undamaged change was refused"
        return
    with contextlib.suppress(LedgerError):
        assert written == {op.obj for op in operations(bytes(body))}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3))
@example([])
def test_what_a_change_writes_and_writes_only_new_keys_into_are_read_at_once(
    edits: list[tuple[int, int]],
) -> None:
    """Opening a snapshot's bundles reads both from one pass over a change's columns
    (objects_and_new_writes): the same answers as objects_written and new_writes each
    give, or the same refusal — also for a damaged change."""
    doc = LedgerDoc.genesis(b"seed", ("resources", "members"), bytes(16))
    with doc.edit() as w:
        w.put("resources", "r" * 32, {"name": "Ladder", "where": {"shelf": "top"}})
    body = bytearray(_change_body(doc.last_edit.changes[0]))
    for position, byte in edits:
        if position < len(body):
            body[position] = byte
    try:
        written = objects_written(bytes(body))
    except LedgerError:
        with pytest.raises(LedgerError):
            objects_and_new_writes(bytes(body))
        return
    try:
        new: frozenset[ObjectRef] | None = new_writes(bytes(body))
    except LedgerError:  # its pred column is damaged: it is judged operation by operation
        new = None
    assert objects_and_new_writes(bytes(body)) == (written, new)
    if not edits:  # a new entry in the resources table, and the map inside it
        new = new_writes(bytes(body))
        assert new is not None
        assert len(new) == 1
        assert writes_only_new(bytes(body), frozenset(doc.table_refs()))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3))
@example([])
def test_the_keys_a_change_makes_in_tables_are_read_as_its_operations_name_them(
    edits: list[tuple[int, int]],
) -> None:
    """keys_written_into reads only the table-level operations' keys (R2a's entry tags,
    asked of every change a snapshot covers): what the operations, read one by one, write
    into the tables — or a refusal, also of a damaged change."""
    doc = LedgerDoc.genesis(b"seed", ("resources", "events"), bytes(16))
    tables = frozenset(doc.table_refs())
    with doc.edit() as w:
        w.put("resources", "r" * 32, {"name": "Ladder", "where": {"shelf": "top"}})
        w.put("events", "e" * 32, {"action": "produce", "qty": "1"})
    body = bytearray(_change_body(doc.last_edit.changes[0]))
    for position, byte in edits:
        if position < len(body):
            body[position] = byte
    try:
        made = keys_written_into(read_columns(bytes(body)), tables)
    except LedgerError:
        assert edits, "an undamaged change was refused"
        return
    if not edits:
        assert [op.key for op in made] == ["r" * 32, "e" * 32]
    with contextlib.suppress(LedgerError):
        assert made == [op for op in operations(bytes(body)) if op.obj in tables]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=3))
@example([])
def test_the_one_pass_of_opening_reads_what_the_checks_read_one_by_one(
    edits: list[tuple[int, int]],
) -> None:
    """Opening a snapshot's bundles reads, in one pass over a change's columns
    (objects_names_and_new_keys), what the entry tags ask: the same operations
    keys_written_into lists of the objects the change writes only new keys into, and
    the names and objects read as keyed_values and objects_and_new_writes read them — or
    a refusal, also of a damaged change."""
    doc = LedgerDoc.genesis(b"seed", ("resources", "commitments"), bytes(16))
    with doc.edit() as w:
        w.put("resources", "r" * 32, {"name": "Ladder", "created_by": "a" * 32})
        w.put("commitments", "c" * 32 + "h", {"handoff": "c" * 32, "by": "a" * 32})
    body = bytearray(_change_body(doc.last_edit.changes[0]))
    for position, byte in edits:
        if position < len(body):
            body[position] = byte
    try:
        columns = read_columns(bytes(body))
    except LedgerError:
        assert edits, "an undamaged change was refused"
        return
    writes, new, names, made = objects_names_and_new_keys(bytes(body), ATTRIBUTION_KEYS, columns)
    try:
        assert (writes, new) == objects_and_new_writes(bytes(body), columns)
    except LedgerError:
        assert writes is None
        assert new is None
    try:
        assert names == keyed_values(bytes(body), ATTRIBUTION_KEYS, columns)
    except LedgerError:
        assert isinstance(names, str)
    if new is None or isinstance(names, str) or made is None:
        assert made is None
        assert edits, "an undamaged change was not read"
        with contextlib.suppress(LedgerError):  # unreadable as NewKeys: so for the checks
            if new is not None and not isinstance(names, str):
                keys_written_into(columns, new)
                pytest.fail("operations the checks read were not read when opened")
        return
    assert made.made_from == (columns[1], columns[2])
    with contextlib.suppress(LedgerError):
        assert list(made.ops) == keys_written_into(columns, new)
    if not edits:
        tables = frozenset(doc.table_refs())
        assert new <= tables
        assert [op.key for op in made.ops] == ["r" * 32, "c" * 32 + "h"]
        assert list(made.ops) == keys_written_into(columns, tables)
