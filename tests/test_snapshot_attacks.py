"""Attacks on R13 (docs/security.md §6): a snapshot is only a faster way of receiving the
bundles it covers. Each test gives one fresh device a snapshot with the bundles a relay
would send with it, and a copy of that device the same bundles one by one, and asks that
both end the same — or that a forged snapshot is refused whole."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from automerge.core import ObjType

from hearth.crypto import SigningKey
from hearth.group import member_changes
from hearth.ledger import Kind, LedgerDoc, membership_rules
from hearth.ledger.archive import ARCHIVE_AFTER_MS
from hearth.ledger.ledger import LIVE
from hearth.net import sync_client
from hearth.node.node import Node, open_node
from hearth.protocol.bundle import encode_snapshot, parse_envelope
from hearth.protocol.sync import Arrived, Output, Settled
from hearth.testing import FakeClock
from hearth.validity.intake import Verdict, take_in, take_snapshot
from tests.test_membership import deliver, exchange, make_group, new_node, resource_names
from tests.test_snapshots import bundles, signed_by_ben, snapshot


def outcome(node: Node, gid: str) -> tuple[object, ...]:
    """What a member sees and what the node will build on."""
    view = node.view(gid)
    return (
        sorted((m.name, m.status, m.role.value) for m in view.members(include_gone=True)),
        sorted(resource_names(node)),
        sorted(node.ledger(gid).doc.heads()),
        node.feeds.heads(gid),
        sorted(b.id for b in node.feeds.all(gid) if b.state == "applied"),
    )


def one_by_one_copy(tmp_path: Path, fresh: Node, name: str) -> Node:
    """A copy of a fresh device's home, to be given the same bundles one by one."""
    shutil.copytree(fresh.home, tmp_path / name)
    return open_node(tmp_path / name, clock=FakeClock(step=1000))


def take_all(node: Node, envelopes: Sequence[bytes]) -> None:
    """Offer bundles until nothing more applies (as syncs from several relays would)."""
    for _ in range(4):
        if Verdict.APPLIED not in [take_in(node, e, source="test").verdict for e in envelopes]:
            return


def as_relay_sends(
    node: Node, snap: bytes, sent: Sequence[bytes]
) -> tuple[Verdict, frozenset[bytes]]:
    """What sync_client does with a snapshot and the bundles a relay sends after it: the
    snapshot with all of them, then those it did not take, one by one."""
    result, taken = take_snapshot(node, snap, sent, source="relay")
    for envelope in sent:
        if parse_id(envelope) not in taken:
            take_in(node, envelope, source="relay")
    return result.verdict, taken


def parse_id(envelope: bytes) -> bytes:
    return parse_envelope(envelope).id


def test_a_covered_write_taken_out_by_a_removal_that_r7_then_voids_counts_again(
    tmp_path: Path,
) -> None:
    """R7 with a snapshot: Ada (senior) writes a spade, Ben (junior admin) removes her not
    knowing of it, and Ada, not knowing of that, removes Ben. Sam, who had the spade but
    neither removal, publishes an honest snapshot. A fresh device taking it in, then the
    rest, first takes the spade out (Ben's removal of Ada, cutoff before it) and must put
    it back when Ada's answer voids that removal — as the same bundles one by one do."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Sam"])
    ada, ben, sam = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    exchange(nodes)  # everyone has the invite
    with ada.change() as ledger:
        ledger.add_resource("Ada's spade", kind=Kind.TOOL)
    deliver(ada, sam, gid)  # Sam has the spade; Ben has not
    member_changes.remove_member(ben, gid, "Ada")  # cutoff: before the spade
    snap = snapshot(sam, gid)  # honest: no removal in it
    member_changes.remove_member(ada, gid, "Ben")  # Ada's answer, not knowing of hers
    with ada.change() as ledger:
        ledger.add_resource("Ada's rake", kind=Kind.TOOL)
    # A relay sends what it holds in the order it got it: Sam's, then Ben's, then Ada's.
    sent = list(dict.fromkeys(bundles(sam, gid) + bundles(ben, gid) + bundles(ada, gid)))
    copy = one_by_one_copy(tmp_path, fay, "Fay-copy")
    verdict, taken = as_relay_sends(fay, snap, sent)
    assert verdict is Verdict.APPLIED
    assert taken
    take_all(fay, sent)
    take_all(copy, sent)
    assert "Ada's spade" in resource_names(copy)
    assert outcome(fay, gid) == outcome(copy, gid)
    for node in (*nodes, fay, copy):
        node.close()


def replace_entry(doc: LedgerDoc, table: str, entry: str) -> None:
    """Write an entry again as a new map object with the same fields: the object the
    entry had before is no longer in the document's tables, though its history is."""
    fields = doc.read_entry(table, entry)
    assert fields is not None
    with doc.edit() as w:
        new = w._tx.put_object(w._table(table), entry, ObjType.Map)
        w._put_fields(new, fields)  # type: ignore[arg-type]
        w.touched.add((table, entry))


def test_a_self_promotion_into_an_object_the_snapshot_no_longer_shows_is_refused(
    tmp_path: Path,
) -> None:
    """Ben, a member, signs a bundle making himself an admin (refused one by one), then a
    second writing his entry again as a new object with the same fields: judged as he saw
    things (an admin, by the first), it changes nothing. The first writes to an object the
    snapshot's members table no longer holds, so judging only writes to the objects it
    holds would not see it."""
    nodes = make_group(tmp_path, ["Ada", "Ben"])
    ada, ben = nodes
    gid = ada.current_group().id
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    exchange(nodes)
    entry = ben.identity.member_id
    doc = signed_by_ben(ben, gid, {"role": "admin"}, entry)
    replace_entry(doc, "members", entry)
    with ben.store.write():
        ben.feeds.seal_local(gid, [(LIVE, c, [("members", entry)]) for c in doc.last_edit.changes])
    sent = list(dict.fromkeys(bundles(ada, gid) + bundles(ben, gid)))
    copy = one_by_one_copy(tmp_path, fay, "Fay-copy")
    verdict, _ = as_relay_sends(fay, snapshot(ben, gid, doc=doc), sent)
    assert verdict is Verdict.REJECTED
    take_all(copy, sent)
    assert ("Ben", "active", "member") in outcome(copy, gid)[0]
    assert ("Ben", "active", "member") in outcome(fay, gid)[0]
    assert outcome(fay, gid) == outcome(copy, gid)
    for node in (*nodes, fay, copy):
        node.close()


def test_a_deeply_nested_entry_in_a_snapshot_takes_no_node_down(tmp_path: Path) -> None:
    """Ben signs a bundle whose resource nests maps 1,500 deep (3 KB): reading it
    must neither overflow the stack of a node taking his snapshot nor of one taking the
    bundle itself."""
    nodes = make_group(tmp_path, ["Ada", "Ben"])
    ada, ben = nodes
    gid = ada.current_group().id
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    exchange(nodes)
    doc = LedgerDoc.load(ben.ledger(gid).doc.save(), ben.group(gid).actor)
    with doc.edit() as w:
        obj = w._tx.put_object(w._table("resources"), "deep", ObjType.Map)
        for _ in range(1500):
            obj = w._tx.put_object(obj, "n", ObjType.Map)
    with ben.store.write():
        ben.feeds.seal_local(
            gid, [(LIVE, c, [("resources", "deep")]) for c in doc.last_edit.changes]
        )
    sent = list(dict.fromkeys(bundles(ada, gid) + bundles(ben, gid)))
    copy = one_by_one_copy(tmp_path, fay, "Fay-copy")
    as_relay_sends(fay, snapshot(ben, gid, doc=doc), sent)
    take_all(copy, sent)
    assert outcome(fay, gid) == outcome(copy, gid)
    for node in (*nodes, fay, copy):
        node.close()


def posing_as(node: Node, other: Node) -> None:
    """Make ``node`` claim ``other``'s member key (public: every member can read it in the
    group's founding record and members table) as its own; it cannot sign with it."""
    fake = SigningKey.generate()
    object.__setattr__(fake, "public", other.identity.member_key.public)
    node._identity = dataclasses.replace(node.identity, member_key=fake)


def test_a_member_invite_cannot_add_a_device_to_an_admins_entry(tmp_path: Path) -> None:
    """R14 inside a snapshot (and outside): Mallory, invited as a new member, claims the
    invite naming Ada's member key — the claim is signed by the invite's key alone — and,
    having read the group's ledger with the token's keys, adds her device to Ada's entry.
    Judged as Ada, an admin, it would count: Mallory's device would be Ada's. A member
    invite lets in a new member only, on a node taking a snapshot as one by one."""
    nodes = make_group(tmp_path, ["Ada", "Ben"])
    ada, ben = nodes
    gid = ada.current_group().id
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    mallory = new_node(tmp_path, "Mallory", FakeClock(step=1000))
    posing_as(mallory, ada)
    token = ada.create_invite()
    mallory.join_with_token(token, as_device=True)
    deliver(ada, mallory, gid)
    assert mallory.claim_device(gid)
    with mallory.change() as ledger:
        ledger.add_resource("Mallory's box", kind=Kind.OTHER)
    deliver(mallory, ada, gid)
    # Ada's node refuses the claim outright, so does not confirm it; one that did (an
    # older version) ...
    assert "confirmed" not in ada.view(gid).tables["invites"][token.invite_id]
    device = mallory.identity.device_key.public
    with ada.change(gid) as ledger:
        ledger.confirm_invite(token.invite_id, device.hex())
    deliver(mallory, ada, gid)  # ... would not let it count either
    for source in (ada, mallory):
        deliver(source, ben, gid)
    deliver(ada, mallory, gid)  # she holds the confirmation, and publishes a snapshot
    copy = one_by_one_copy(tmp_path, fay, "Fay-copy")
    sent = list(dict.fromkeys(bundles(ada, gid) + bundles(mallory, gid)))
    verdict, _ = as_relay_sends(fay, snapshot(mallory, gid), sent)
    assert verdict is Verdict.REJECTED
    take_all(copy, sent)
    for node in (ada, ben, fay, copy):
        cards = membership_rules.cards(node.view(gid).tables["members"])
        assert device not in {c.key for c in cards if c.member_id == ada.identity.member_id}
        assert "Mallory's box" not in resource_names(node)
    for node in (*nodes, fay, mallory, copy):
        node.close()


def test_an_honest_snapshot_of_a_group_with_an_archive_is_taken(tmp_path: Path) -> None:
    """Not an attack, the baseline the others need: a group older than a quarter keeps
    archive documents, each started from a genesis every node makes alike and no bundle
    carries. A fresh device must still take an honest snapshot holding them, and end as
    the bundles one by one leave it."""
    nodes = make_group(tmp_path, ["Ada", "Ben"])
    ada, _ = nodes
    gid = ada.current_group().id
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    with ada.change() as ledger:
        ledger.add_resource("Old drill", kind=Kind.TOOL)
    ada.clock.advance(ARCHIVE_AFTER_MS + 10 * 86_400_000)
    with ada.change() as ledger:
        assert ledger.archive_old(ada.group(gid).seed)
    ledger = ada.ledger(gid)
    docs = [(LIVE, ledger.doc.save())]
    docs += [(name, doc.save()) for name, doc in sorted(ledger.archive_docs().items())]
    snap = ada.feeds.seal_snapshot(gid, encode_snapshot(docs, ada.feeds.heads(gid))).encode()
    sent = bundles(ada, gid)
    copy = one_by_one_copy(tmp_path, fay, "Fay-copy")
    verdict, _ = as_relay_sends(fay, snap, sent)
    take_all(copy, sent)
    assert verdict is Verdict.APPLIED
    assert outcome(fay, gid) == outcome(copy, gid)
    assert "Old drill" in resource_names(fay)
    for node in (*nodes, fay, copy):
        node.close()


class Killed(BaseException):
    """The app killed mid-sync (a phone closing it)."""


def test_a_device_killed_after_a_snapshot_reads_again_what_it_had_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ben uploads a forged snapshot; a relay sends it first to a fresh device, then the
    bundles stored before it. Refused, those go in one by one — minutes for a big group.
    Killed meanwhile, the device must read again from the first it had not taken: its
    cursor at the relay must not have moved to the snapshot's place already."""
    nodes = make_group(tmp_path, ["Ada", "Ben"])
    ada, ben = nodes
    gid = ada.current_group().id
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    heads = ben.feeds.heads(gid)
    author, seq, _ = heads[0]
    forged = snapshot(ben, gid, heads=[(author, seq + 5, b"\x00" * 32), *heads[1:]])
    sent = list(dict.fromkeys(bundles(ada, gid) + bundles(ben, gid)))
    topic = fay.feeds.current_keys(gid).topic
    outputs: list[Output] = [Arrived(topic=topic, cursor=len(sent) + 1, envelope=forged)]
    outputs += [Arrived(topic=topic, cursor=i + 1, envelope=e) for i, e in enumerate(sent)]
    calls = []

    def killed_on_the_third(node: Node, data: bytes, *, source: str) -> object:
        calls.append(data)
        if len(calls) == 3:
            raise Killed
        return take_in(node, data, source=source)

    monkeypatch.setattr(sync_client, "take_in", killed_on_the_third)
    report = sync_client.RelayReport(url="ws://relay")
    with pytest.raises(Killed):
        sync_client.record(fay, "ws://relay", [*outputs, Settled()], report)
    assert sync_client._cursor(fay, "ws://relay", topic) == 2
    for node in (*nodes, fay):
        node.close()


def test_a_relay_cannot_make_a_fresh_device_hold_all_it_sends_after_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device holds a snapshot and what follows it until the relay says it has sent
    everything. A lying relay (or an enormous topic) that never stops sending must not
    fill the device's memory: past a bound the device gives the snapshot up and takes
    what came one by one, as it goes — here with the bound made small."""
    nodes = make_group(tmp_path, ["Ada", "Ben"])
    ada, ben = nodes
    gid = ada.current_group().id
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    sent = list(dict.fromkeys(bundles(ada, gid) + bundles(ben, gid)))
    topic = fay.feeds.current_keys(gid).topic
    outputs: list[Output] = [Arrived(topic=topic, cursor=99, envelope=snapshot(ben, gid))]
    outputs += [Arrived(topic=topic, cursor=i + 1, envelope=e) for i, e in enumerate(sent)]
    monkeypatch.setattr(sync_client, "MAX_PENDING_BYTES", len(sent[0]) + 1)
    report = sync_client.RelayReport(url="ws://relay")
    sync_client.record(fay, "ws://relay", outputs, report)  # no end in sight
    assert not report.pending
    assert {parse_id(e) for e in sent} <= {b.id for b in fay.feeds.all(gid)}
    assert sync_client._cursor(fay, "ws://relay", topic) == len(sent)
    for node in (*nodes, fay):
        node.close()
