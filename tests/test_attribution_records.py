"""R2a beyond the name fields: what a record says is its writer's (docs/security.md §5, R2a).

R2a refuses a change that writes another member's id into ``by`` or ``created_by``. But
history says "Ada lent the ladder to Cat" from an event whose ``by`` is Ada's *and*
whose ``to`` is Cat: a modified client that leaves the name alone and rewrites the rest
of Ada's record — the borrower of her lend, her "declined" as "accepted", what her edit
changed, what her proposal promised — or deletes, replaces or archives a forged copy of
it, makes history say Ada did what Ben did. These tests try each, one bundle at a time
and inside a snapshot."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from automerge.core import ROOT, Document, ObjType, ScalarType

from hearth.ledger import CommitmentStatus, Kind, Ledger, history
from hearth.ledger.archive import period_of
from hearth.ledger.automerge_doc import EntryRef, change_body, change_hash
from hearth.ledger.change_ops import _rle, _runs, operations, read_varint
from hearth.ledger.change_ops import _sleb as sleb_read
from hearth.ledger.entry_ids import handoff_id, tagged_id
from hearth.ledger.ledger import LIVE
from hearth.node.node import Node, tags_entry_ids
from hearth.protocol.bundle import encode_snapshot
from hearth.testing import FakeClock
from hearth.validity.intake import Outcome, Verdict, take_in, take_snapshot
from tests.test_membership import deliver, make_group, new_node


@dataclass
class Scene:
    """Ada (admin), Ben (the cheat) and Cat, each holding everything: Ada added a ladder,
    lent it to Cat, edited it, declined Ben's promise, proposed one of her own and
    needs rope; Cat closed that need."""

    ada: Node
    ben: Node
    cat: Node
    gid: str
    ladder: str
    lend: str  # Ada's lend event
    declined: str  # Ben's promise, which Ada declined
    proposal: str  # Ada's promise: Ada gives Cat a drill


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    ada, ben, cat = make_group(tmp_path, ["Ada", "Ben", "Cat"])
    gid = ada.current_group().id
    a, b, c = (n.identity.member_id for n in (ada, ben, cat))
    with ben.change(gid) as ledger:
        declined = ledger.add_commitment("Lend the drill", giver=b, receiver=a).id
    deliver(ben, ada, gid)
    with ada.change(gid) as ledger:
        ladder = ledger.add_resource("Ladder", kind=Kind.TOOL).id
        ledger.lend(ladder, to=c)
        ledger.edit_resource(ladder, location="Ada's shed")
        ledger.change_commitment(declined, CommitmentStatus.DECLINED)
        proposal = ledger.add_commitment("A drill", giver=a, receiver=c).id
        ledger.add_need("Rope")
    for node in (ben, cat):
        deliver(ada, node, gid)
    with cat.change(gid) as ledger:
        ledger.close_need(next(n.id for n in ledger.view.needs() if n.what == "Rope"))
    for node in (ada, ben):
        deliver(cat, node, gid)
    lend = next(e.id for e in ada.view(gid).events() if e.action.value == "lend")
    yield Scene(ada, ben, cat, gid, ladder, lend, declined, proposal)
    for node in (ada, ben, cat):
        node.close()


def told(node: Node, gid: str) -> list[tuple[str, str]]:
    """The group's history on a node, as (who, what)."""
    view = node.view(gid)
    return [(view.member_name(h.by), h.what) for h in history(view)]


def _document_at(changes: list[bytes], heads: list[bytes]) -> Document:
    """A document holding exactly what ``heads`` build on: a client's copy from then
    (loaded from the change chunks; the binding's ``fork_at`` fails on these documents)."""
    by_hash = {change_hash(c).hash: c for c in changes}
    wanted: set[bytes] = set()
    todo = list(heads)
    while todo:
        head = todo.pop()
        if head not in wanted:
            wanted.add(head)
            todo += change_hash(by_hash[head]).deps
    return Document.load(b"".join(c for c in changes if change_hash(c).hash in wanted))


def new_bundles(source: Node, target: Node, gid: str) -> list[bytes]:
    held = {x.id for x in target.feeds.all(gid)}
    return [x.envelope for x in source.feeds.all(gid) if x.id not in held]


# Each: what Ben's modified client writes into the ledger, never naming anyone.
Tamper = Callable[[Ledger, Scene], None]


def _lend_moved_to_ben(ledger: Ledger, s: Scene) -> None:
    with ledger._edit() as w:
        w.put("events", s.lend, {"to": s.ben.identity.member_id})


def _decline_made_accept(ledger: Ledger, s: Scene) -> None:
    change = ledger.view.commitment(s.declined).changes[0].id
    with ledger._edit() as w:
        w.put("commitments", s.declined, {"changes": {change: {"to": "accepted"}}})


def _edit_record_rewritten(ledger: Ledger, s: Scene) -> None:
    edits = ledger.view.tables["resources"][s.ladder]["edits"]
    assert isinstance(edits, dict)
    edit = next(iter(edits))
    with ledger._edit() as w:
        w.put(
            "resources",
            s.ladder,
            {"edits": {edit: {"fields": "keeper", "values": {"keeper": "Ben"}}}},
        )


def _proposal_rewritten(ledger: Ledger, s: Scene) -> None:
    with ledger._edit() as w:
        w.put(
            "commitments",
            s.proposal,
            {"what": "100 euros", "receiver": s.ben.identity.member_id},
        )


def _need_rewritten(ledger: Ledger, s: Scene) -> None:
    need = next(n.id for n in ledger.view.needs() if n.what == "Rope")
    with ledger._edit() as w:
        w.put("needs", need, {"what": "Ben's bike, for keeps"})


def _event_deleted(ledger: Ledger, s: Scene) -> None:
    with ledger._edit() as w:
        w.delete("events", s.lend)


def _event_replaced(ledger: Ledger, s: Scene) -> None:
    with ledger._edit() as w:
        w.delete("events", s.lend)
        w.put("events", s.lend, {"action": "lend", "resource": s.ladder, "to": "x", "at": 1})


def _edit_record_replaced(ledger: Ledger, s: Scene) -> None:
    edits = ledger.view.tables["resources"][s.ladder]["edits"]
    assert isinstance(edits, dict)
    edit = next(iter(edits))
    me = s.ben.identity.member_id
    with ledger._edit() as w:
        w.put("resources", s.ladder, {"edits": {edit: None}})
        w.put("resources", s.ladder, {"edits": {edit: {"by": me, "at": 1, "fields": "x"}}})


def _silently_renamed(ledger: Ledger, s: Scene) -> None:
    with ledger._edit() as w:
        w.put("resources", s.ladder, {"name": "Ben's ladder", "keeper": s.ben.identity.member_id})


def _closing_rewritten(ledger: Ledger, s: Scene) -> None:
    need = next(n for n in ledger.view.needs() if n.what == "Rope")
    assert need.closed_by == s.cat.identity.member_id
    with ledger._edit() as w:
        w.put("needs", need.id, {"closed_at": 1})


TAMPERING = [
    pytest.param(_lend_moved_to_ben, id="a lend's borrower"),
    pytest.param(_decline_made_accept, id="a status change's status"),
    pytest.param(_edit_record_rewritten, id="an edit record's values"),
    pytest.param(_proposal_rewritten, id="a proposal's terms"),
    pytest.param(_need_rewritten, id="a need's what"),
    pytest.param(_event_deleted, id="an event deleted"),
    pytest.param(_event_replaced, id="an event replaced"),
    pytest.param(_edit_record_replaced, id="an edit record replaced"),
    pytest.param(_silently_renamed, id="a resource changed with no edit record"),
    pytest.param(_closing_rewritten, id="another member's closing of a need"),
]


@pytest.mark.parametrize("tamper", TAMPERING)
def test_a_record_in_another_members_name_is_theirs(scene: Scene, tamper: Tamper) -> None:
    s = scene
    before = told(s.ada, s.gid)
    with s.ben.change(s.gid) as ledger:  # a modified client
        tamper(ledger, s)
    (forged,) = new_bundles(s.ben, s.ada, s.gid)
    outcome = take_in(s.ada, forged, source="test")
    assert outcome.verdict is Verdict.REJECTED, told(s.ada, s.gid)
    assert "another member" in outcome.reason
    assert told(s.ada, s.gid) == before
    assert s.ada.view(s.gid).commitment(s.declined).status is CommitmentStatus.DECLINED


def test_a_snapshot_covering_a_rewritten_record_is_refused(tmp_path: Path, scene: Scene) -> None:
    """The same forgery signed in Ben's feed, inside a snapshot a new device takes."""
    s = scene
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(s.ada.create_invite())
    deliver(s.ada, s.ben, s.gid)
    with s.ben.change(s.gid) as ledger:
        _decline_made_accept(ledger, s)
    payload = encode_snapshot([(LIVE, s.ben.ledger(s.gid).doc.save())], s.ben.feeds.heads(s.gid))
    snapshot = s.ben.feeds.seal_snapshot(s.gid, payload).encode()
    carried = [b.envelope for b in s.ben.feeds.all(s.gid)]
    outcome, taken = take_snapshot(fay, snapshot, carried, source="test")
    assert outcome.verdict is Verdict.REJECTED
    assert "another member" in outcome.reason
    assert not taken
    fay.close()


def test_an_archived_record_is_the_live_one_moved(scene: Scene) -> None:
    """Ben's client "archives" Ada's lend: it deletes it from the live document and
    writes into an archive an event with her name — lent to Ben, not to Cat."""
    s = scene
    with s.ben.change(s.gid) as ledger:
        raw = dict(ledger.view.tables["events"][s.lend])
        at = raw["at"]
        assert isinstance(at, int)
        period = period_of(at)
        archive = ledger.document(period)
        with ledger._edit(period, archive) as w:
            w.put("events", s.lend, {**raw, "to": s.ben.identity.member_id})  # type: ignore[dict-item]
        with ledger._edit() as w:
            w.delete("events", s.lend)
    outcomes = [take_in(s.ada, e, source="test") for e in new_bundles(s.ben, s.ada, s.gid)]
    assert [o.verdict for o in outcomes] == [Verdict.REJECTED]
    assert "archive" in outcomes[0].reason
    assert s.ada.view(s.gid).resource(s.ladder).custodian == s.cat.identity.member_id


def _written_from_before(
    s: Scene,
    key: str,
    into: Callable[[Any], bytes],
    fields: dict[str, str],
    named: list[EntryRef],
) -> Outcome:
    """Ben's client writes a map at ``key`` inside the map ``into`` finds, from a copy
    of the document as it was before ``key`` was first written (its change does not build
    on that write: to Automerge, a write at the same moment), with enough operations
    before it to win the conflict (at a key of his own, put and deleted again). Ada takes
    the bundle in."""
    ben = s.ben.identity.member_id
    doc = s.ben.ledger(s.gid).doc
    changes = doc.changes_since([])
    first = next(c for c in changes if any(o.key == key for o in operations(change_body(c))))
    before = list(change_hash(first).deps)
    fork = _document_at(changes, before)
    fork.set_actor(doc.actor)
    junk_key = tagged_id("0" * 16, ben)
    with fork.transaction() as tx:
        events = tx.get(ROOT, "events")[1]
        junk = tx.put_object(events, junk_key, ObjType.Map)
        for i in range(300):
            tx.put(junk, f"k{i}", ScalarType.Str, "x")
        tx.delete(events, junk_key)
        mine = tx.put_object(into(tx), key, ObjType.Map)
        for name, value in fields.items():
            tx.put(mine, name, ScalarType.Str, value)
    crafted = [c.bytes for c in fork.get_changes(before)]
    with s.ben.store.write():
        envelope = s.ben.feeds.seal_local(
            s.gid, [(LIVE, c, [("events", junk_key), *named]) for c in crafted]
        )
    return take_in(s.ada, envelope.encode(), source="test")


def test_a_record_is_not_hidden_by_a_write_claiming_not_to_have_seen_it(scene: Scene) -> None:
    """Ben writes at the key of Ada's lend from before the lend. It names only Ben, so R2a
    and the record rules, judged at what it builds on, see a free key; had it counted, the
    view would show the winner of the conflict and Ada's lend would be gone from history.
    The key carries Ada's tag (docs/security.md, R2a: entry ids only their writer can make)."""
    s = scene
    outcome = _written_from_before(
        s,
        s.lend,
        lambda tx: tx.get(ROOT, "events")[1],
        {"action": "return", "resource": s.ladder, "closes": "", "by": s.ben.identity.member_id},
        [("events", s.lend)],
    )
    assert outcome.verdict is Verdict.REJECTED
    assert "not its writer's" in outcome.reason
    assert ("Ada", "lent Ladder to Cat") in told(s.ada, s.gid)


def test_a_record_inside_an_entry_is_not_hidden_by_a_write_claiming_not_to_have_seen_it(
    scene: Scene,
) -> None:
    """The same at the key of Ada's edit record inside her ladder (which Ben's copy holds,
    without the edit): a record others may add to, under a key that is not Ben's."""
    s = scene
    edits = s.ada.view(s.gid).tables["resources"][s.ladder]["edits"]
    assert isinstance(edits, dict)
    assert len(edits) == 1
    (edit,) = edits
    ladder = s.ladder

    def ladders_edits(tx: Any) -> bytes:
        resources = tx.get(ROOT, "resources")[1]
        return bytes(tx.get(tx.get(resources, ladder)[1], "edits")[1])

    outcome = _written_from_before(
        s,
        edit,
        ladders_edits,
        {"by": s.ben.identity.member_id, "fields": "note"},
        [("resources", s.ladder)],
    )
    assert outcome.verdict is Verdict.REJECTED
    assert "not its writer's" in outcome.reason
    assert ("Ada", "edited Ladder (location → 'Ada's shed')") in told(s.ada, s.gid)


def test_an_entry_under_an_untagged_id_is_refused_in_a_group_founded_with_tags(
    scene: Scene,
) -> None:
    """An older client's way of making ids (all randomness) is not taken in a group whose
    founding record says its ids are tagged; a group founded before says nothing."""
    s = scene
    assert tags_entry_ids(s.ben.group(s.gid).genesis)
    with s.ben.change(s.gid) as ledger, ledger._edit() as w:
        w.put("needs", "f" * 32, {"what": "Rope", "created_by": s.ben.identity.member_id})
    outcomes = [take_in(s.ada, e, source="test") for e in new_bundles(s.ben, s.ada, s.gid)]
    assert [o.verdict for o in outcomes] == [Verdict.REJECTED]
    assert "not its writer's" in outcomes[0].reason
    old = json.loads(s.ben.group(s.gid).genesis)
    body = json.loads(old["op"])
    del body["entry_ids"]
    assert not tags_entry_ids(json.dumps({**old, "op": json.dumps(body)}).encode())


@pytest.mark.parametrize(
    ("kind", "taken"),
    [("untagged", False), ("handoff", True), ("handoff naming another", False)],
)
def test_a_snapshot_judges_the_tags_of_the_entries_it_covers(
    tmp_path: Path, scene: Scene, kind: str, taken: bool
) -> None:
    """The same new entries, inside a snapshot a new device takes: the entry tags are
    judged from what was read of each change when its bundle was opened — an untagged
    id is refused, a handoff's commitment (untagged, its ``handoff`` naming its key)
    taken, one whose ``handoff`` names another key refused."""
    s = scene
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(s.ada.create_invite())
    deliver(s.ada, s.ben, s.gid)
    ben = s.ben.identity.member_id
    with s.ben.change(s.gid) as ledger, ledger._edit() as w:
        if kind == "untagged":
            w.put("needs", "f" * 32, {"what": "Rope", "created_by": ben})
        else:
            key = handoff_id("9" * 32)
            named = key if kind == "handoff" else handoff_id("8" * 32)
            w.put("commitments", key, {"what": "Rope", "giver": ben, "handoff": named})
    payload = encode_snapshot([(LIVE, s.ben.ledger(s.gid).doc.save())], s.ben.feeds.heads(s.gid))
    snapshot = s.ben.feeds.seal_snapshot(s.gid, payload).encode()
    carried = [b.envelope for b in s.ben.feeds.all(s.gid)]
    outcome, _ = take_snapshot(fay, snapshot, carried, source="test")
    if taken:
        assert outcome.verdict is not Verdict.REJECTED, outcome.reason
    else:
        assert outcome.verdict is Verdict.REJECTED
        assert "not its writer's" in outcome.reason
    fay.close()


def test_a_commitment_is_not_hidden_by_a_write_dressed_as_a_handoff(scene: Scene) -> None:
    """Ben writes at the key of Ada's proposal from before it, saying in ``handoff`` that
    the key is a neighbourhood request's ref (the one kind of commitment not tagged)."""
    s = scene
    ben = s.ben.identity.member_id
    outcome = _written_from_before(
        s,
        s.proposal,
        lambda tx: tx.get(ROOT, "commitments")[1],
        {"what": "Nothing", "giver": ben, "receiver": "", "neighbour": "x", "handoff": s.proposal},
        [("commitments", s.proposal)],
    )
    assert s.ada.view(s.gid).commitment(s.proposal).what == "A drill"
    assert outcome.verdict is Verdict.REJECTED
    assert "not its writer's" in outcome.reason


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def _with_pred(change: bytes, index: int, pred: tuple[int, int]) -> bytes:
    """``change`` (an uncompressed change chunk) with its operation ``index`` made to say
    it replaces the operation ``pred`` (actor index, counter), wherever that is: what a
    modified client can write. Rewrites the pred columns and the chunk's checksum."""
    body = change_body(change)
    p = 0
    count, p = read_varint(body, p)
    p += 32 * count
    length, p = read_varint(body, p)
    p += length
    _, p = read_varint(body, p)
    _, p = read_varint(body, p)
    _, p = read_varint(body, p, signed=True)
    length, p = read_varint(body, p)
    p += length
    others, p = read_varint(body, p)
    for _ in range(others):
        length, p = read_varint(body, p)
        p += length
    header = body[:p]
    ncols, p = read_varint(body, p)
    specs = []
    for _ in range(ncols):
        spec, p = read_varint(body, p)
        length, p = read_varint(body, p)
        specs.append((spec, length))
    data: dict[int, bytes] = {}
    for spec, length in specs:
        assert not spec & 0x08
        data[spec] = body[p : p + length]
        p += length
    rest = body[p:]
    ops = len(_rle(data[0x42]))
    groups = [g or 0 for g in _rle(data.get(0x70, b""))] + [0] * ops
    groups = groups[:ops]
    actors = [a or 0 for a in _rle(data.get(0x71, b""))]
    counters: list[int] = []
    total = 0
    for delta in _runs(data.get(0x73, b""), sleb_read):
        total += delta or 0
        counters.append(total)
    before = sum(groups[:index])
    if pred is None:
        del actors[before : before + groups[index]], counters[before : before + groups[index]]
        groups[index] = 0
    else:
        actors[before:before] = [pred[0]]
        counters[before:before] = [pred[1]]
        groups[index] += 1
    data[0x70] = _sleb(-len(groups)) + b"".join(_uleb(g) for g in groups)
    data[0x71] = _sleb(-len(actors)) + b"".join(_uleb(a) for a in actors) if actors else b""
    deltas = [c - (counters[i - 1] if i else 0) for i, c in enumerate(counters)]
    data[0x73] = _sleb(-len(deltas)) + b"".join(_sleb(d) for d in deltas) if deltas else b""
    columns = sorted(data.items())
    new_body = (
        header
        + _uleb(len(columns))
        + b"".join(_uleb(spec) + _uleb(len(col)) for spec, col in columns)
        + b"".join(col for _, col in columns)
        + rest
    )
    hashed = bytes([1]) + _uleb(len(new_body)) + new_body
    return b"\x85\x6f\x4a\x83" + hashlib.sha256(hashed).digest()[:4] + hashed


def test_a_record_is_not_hidden_by_a_write_claiming_to_replace_something_else(
    scene: Scene,
) -> None:
    """As above, at the key of Ada's lend from before the lend, but the operation says it
    replaces Ben's own junk map (at another key): to the tag check a replacement, to
    Automerge a new value beside Ada's."""
    s = scene
    ben = s.ben.identity.member_id
    doc = s.ben.ledger(s.gid).doc
    changes = doc.changes_since([])
    first = next(c for c in changes if any(o.key == s.lend for o in operations(change_body(c))))
    before = list(change_hash(first).deps)
    fork = _document_at(changes, before)
    fork.set_actor(doc.actor)
    junk_key = tagged_id("0" * 16, ben)
    with fork.transaction() as tx:
        events = tx.get(ROOT, "events")[1]
        junk = tx.put_object(events, junk_key, ObjType.Map)
        for i in range(300):
            tx.put(junk, f"k{i}", ScalarType.Str, "x")
        mine = tx.put_object(events, s.lend, ObjType.Map)
        for name, value in {"action": "return", "resource": s.ladder, "by": ben}.items():
            tx.put(mine, name, ScalarType.Str, value)
    (crafted,) = [c.bytes for c in fork.get_changes(before)]
    at = next(i for i, o in enumerate(operations(change_body(crafted))) if o.key == s.lend)
    start = operations(change_body(crafted))[0].id[1]
    forged = _with_pred(crafted, at, (0, start))
    assert operations(change_body(forged))[at].preds == 1
    with s.ben.store.write():
        envelope = s.ben.feeds.seal_local(
            s.gid, [(LIVE, forged, [("events", junk_key), ("events", s.lend)])]
        )
    outcome = take_in(s.ada, envelope.encode(), source="test")
    assert ("Ada", "lent Ladder to Cat") in told(s.ada, s.gid)
    assert outcome.verdict is Verdict.REJECTED
    assert "not its writer's" in outcome.reason


def test_a_handoff_is_taken_under_its_own_kind_of_id_only(scene: Scene) -> None:
    """A handoff's commitment (untagged, so that two devices recording it write one entry)
    is taken under :func:`handoff_id`, and refused under a bare 32-digit ref: that is a
    tagged id's shape, where a member's own commitment may be."""
    s = scene
    ref = "ab" * 16
    for key, verdict in ((handoff_id(ref), Verdict.APPLIED), (ref, Verdict.REJECTED)):
        with s.ben.change(s.gid) as ledger:
            ledger.add_handoff(key, "Apples", neighbour="Riverside", member="Ben", giving=False)
        outcomes = [take_in(s.ada, e, source="test") for e in new_bundles(s.ben, s.ada, s.gid)]
        assert [o.verdict for o in outcomes] == [verdict], outcomes
    assert s.ada.view(s.gid).commitment(handoff_id(ref)).neighbour == "Riverside"


def test_a_status_change_is_not_hidden_by_a_record_map_made_anew(scene: Scene) -> None:
    """Ben's commitment, which Ada declined: Ben's client makes its ``changes`` map anew
    saying it replaces nothing, so Automerge keeps it beside the one holding Ada's
    decline, and the view shows the newer, empty one: the promise proposed again."""
    s = scene
    assert s.ada.view(s.gid).commitment(s.declined).status is CommitmentStatus.DECLINED
    doc = s.ben.ledger(s.gid).doc
    changes = doc.changes_since([])
    heads = doc.heads()
    fork = Document.load(b"".join(changes))
    fork.set_actor(doc.actor)
    with fork.transaction() as tx:
        entry = tx.get(tx.get(ROOT, "commitments")[1], s.declined)[1]
        tx.put_object(entry, "changes", ObjType.Map)
    (crafted,) = [c.bytes for c in fork.get_changes(heads)]
    assert operations(change_body(crafted))[0].preds == 1
    forged = _with_pred(crafted, 0, None)
    assert operations(change_body(forged))[0].preds == 0
    with s.ben.store.write():
        envelope = s.ben.feeds.seal_local(s.gid, [(LIVE, forged, [("commitments", s.declined)])])
    outcome = take_in(s.ada, envelope.encode(), source="test")
    assert s.ada.view(s.gid).commitment(s.declined).status is CommitmentStatus.DECLINED
    assert outcome.verdict is Verdict.REJECTED
    assert "as if the map were not there" in outcome.reason
