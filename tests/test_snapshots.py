"""R13: a snapshot is taken only as what the bundles it covers would give, checked against
them (docs/security.md §6). Each forgery is refused whole, the honest node's ledger is as
it was, and the node still catches up from the bundles themselves."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from hearth.crypto import SigningKey
from hearth.group import member_changes
from hearth.ledger import Kind, LedgerDoc, membership_rules
from hearth.ledger.ledger import LIVE
from hearth.node.node import Node
from hearth.protocol.bundle import (
    Inner,
    encode_snapshot,
    open_envelope,
    parse_envelope,
    seal_bundle,
)
from hearth.testing import FakeClock
from hearth.validity.intake import Verdict, take_in, take_snapshot
from hearth.validity.snapshot_opening import Opener
from tests.test_membership import make_group, new_node


@pytest.fixture
def group(tmp_path: Path) -> Iterator[tuple[Node, Node, Node, str]]:
    """Ada founds a group, Ben joins as a member, both write; Fay, a new device of a new
    member, has joined with a token and holds nothing else yet."""
    ada, ben = make_group(tmp_path, ["Ada", "Ben"])
    gid = ada.current_group().id
    for i in range(3):
        with ada.change() as ledger:
            ledger.add_resource(f"Ladder {i}", kind=Kind.TOOL)
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    for envelope in bundles(ada, gid):  # Ben holds what Ada wrote, her invite for Fay too
        take_in(ben, envelope, source="test")
    yield ada, ben, fay, gid
    for node in (ada, ben, fay):
        node.close()


def bundles(node: Node, gid: str) -> list[bytes]:
    return [b.envelope for b in node.feeds.all(gid)]


def snapshot(
    node: Node,
    gid: str,
    doc: LedgerDoc | None = None,
    heads: list[tuple[bytes, int, bytes]] | None = None,
    device: SigningKey | None = None,
) -> bytes:
    """A snapshot as ``node`` would publish it, or with its document, heads or signing
    device swapped for forged ones."""
    saved = (doc or node.ledger(gid).doc).save()
    payload = encode_snapshot([(LIVE, saved)], node.feeds.heads(gid) if heads is None else heads)
    if device is None:
        return node.feeds.seal_snapshot(gid, payload).encode()
    keys = node.feeds.current_keys(gid)
    inner = Inner(
        kind="snapshot",
        group_id=keys.group_id,
        epoch_id=keys.epoch_id,
        author=device.public,
        seq=0,
        prev=b"",
        auth_heads=(),
        created_at=0,
        payload=payload,
    )
    return seal_bundle(inner, keys=keys, device=device, salt=os.urandom(32)).encode()


def state(node: Node, gid: str) -> tuple[object, ...]:
    view = node.view(gid)
    return (
        sorted(node.ledger(gid).doc.heads()),
        node.feeds.heads(gid),
        sorted(r.name for r in view.resources()),
        sorted((m.name, str(m.role)) for m in view.members()),
    )


def refused(fay: Node, gid: str, forged: bytes, carried: list[bytes], reason: str) -> None:
    """The forged snapshot is refused whole, leaving Fay's ledger as it was."""
    before = state(fay, gid)
    outcome, taken = take_snapshot(fay, forged, carried, source="test")
    assert outcome.verdict is Verdict.REJECTED
    assert reason in outcome.reason
    assert not taken
    assert state(fay, gid) == before


def caught_up_from_bundles(fay: Node, honest: Node, gid: str) -> None:
    """Fay then takes the bundles one by one and holds what the honest node holds."""
    for envelope in bundles(honest, gid):
        take_in(fay, envelope, source="test")
    assert sorted(r.name for r in fay.view(gid).resources()) == sorted(
        r.name for r in honest.view(gid).resources()
    )
    honest_members = {(m.name, str(m.role)) for m in honest.view(gid).members()}
    # Fay's own join reaches the others when she syncs; otherwise the lists are one.
    assert {(m.name, str(m.role)) for m in fay.view(gid).members()} - {
        ("Fay", "Role.MEMBER")
    } == honest_members


def test_an_honest_snapshot_is_taken_with_the_bundles_it_covers(
    group: tuple[Node, Node, Node, str],
) -> None:
    _, ben, fay, gid = group
    outcome, taken = take_snapshot(fay, snapshot(ben, gid), bundles(ben, gid), source="test")
    assert outcome.verdict is Verdict.APPLIED, outcome.reason
    assert len(taken) == len(bundles(ben, gid))
    assert {f"Ladder {i}" for i in range(3)} <= {r.name for r in fay.view(gid).resources()}
    assert set(ben.feeds.heads(gid)) <= set(fay.feeds.heads(gid))
    # Held as applied, like bundles taken one by one: passed on, judged again if need be.
    assert all(fay.feeds.get(i) is not None for i in taken)


def test_changes_under_another_members_actor_id_are_refused(
    group: tuple[Node, Node, Node, str],
) -> None:
    """Attack 1: Ben writes into the live document under Ada's actor id — himself an
    admin, a resource renamed — and publishes it as a snapshot."""
    ada, ben, fay, gid = group
    forged = LedgerDoc.load(ben.ledger(gid).doc.save(), ada.group(gid).actor)
    with forged.edit() as w:
        w.put("members", ben.identity.member_id, {"role": "admin"})
    carried = bundles(ben, gid)
    refused(
        fay,
        gid,
        snapshot(ben, gid, doc=forged),
        carried,
        "a snapshot holding 1 change(s) that no bundle it covers carries",
    )
    caught_up_from_bundles(fay, ada, gid)
    assert ("Ben", "Role.MEMBER") in {(m.name, str(m.role)) for m in fay.view(gid).members()}


def test_a_change_no_bundle_carries_under_one_that_a_bundle_carries_is_refused(
    group: tuple[Node, Node, Node, str],
) -> None:
    """The forged change is not one of the document's heads: Ben signs a change of his
    own on top of it, so it is found through what that change depends on."""
    ada, ben, fay, gid = group
    forged = LedgerDoc.load(ben.ledger(gid).doc.save(), ada.group(gid).actor)
    with forged.edit() as w:
        w.put("members", ben.identity.member_id, {"role": "admin"})
    on_top = LedgerDoc.load(forged.save(), ben.group(gid).actor)
    with on_top.edit() as w:
        w.put("resources", "r" * 32, {"name": "Ladder on top"})
    with ben.store.write():
        ben.feeds.seal_local(
            gid, [(LIVE, c, [("resources", "r" * 32)]) for c in on_top.last_edit.changes]
        )
    refused(
        fay,
        gid,
        snapshot(ben, gid, doc=on_top),
        bundles(ben, gid),
        "a snapshot holding 1 change(s) that no bundle it covers carries",
    )
    caught_up_from_bundles(fay, ada, gid)
    assert ("Ben", "Role.MEMBER") in {(m.name, str(m.role)) for m in fay.view(gid).members()}


def signed_by_ben(ben: Node, gid: str, fields: Mapping[str, object], entry: str) -> LedgerDoc:
    """Ben writes to the members table under his own actor id and signs it as the next
    bundle of his feed: a bundle a node takes one by one would refuse. The document with
    it is returned."""
    doc = LedgerDoc.load(ben.ledger(gid).doc.save(), ben.group(gid).actor)
    with doc.edit() as w:
        w.put("members", entry, fields)  # type: ignore[arg-type]
    with ben.store.write():
        ben.feeds.seal_local(gid, [(LIVE, c, [("members", entry)]) for c in doc.last_edit.changes])
    return doc


def test_a_member_promoting_himself_in_a_signed_bundle_is_refused(
    group: tuple[Node, Node, Node, str],
) -> None:
    ada, ben, fay, gid = group
    forged = signed_by_ben(ben, gid, {"role": "admin"}, ben.identity.member_id)
    refused(
        fay,
        gid,
        snapshot(ben, gid, doc=forged),
        bundles(ben, gid),
        "a member who is not an admin changing their own role",
    )
    # The bundles, one by one, refuse Ben's bundle in the same way.
    caught_up_from_bundles(fay, ada, gid)
    for envelope in bundles(ben, gid):
        take_in(fay, envelope, source="test")
    assert ("Ben", "Role.MEMBER") in {(m.name, str(m.role)) for m in fay.view(gid).members()}


def test_a_snapshot_listing_a_made_up_admin_device_is_refused(
    group: tuple[Node, Node, Node, str],
) -> None:
    """Attack 2's way in: a new device that only the snapshot lists, as an admin, signs it."""
    ada, ben, fay, gid = group
    made_up = SigningKey.generate()
    card = {
        "name": "Mallory",
        "role": "admin",
        "devices": {
            "d1": {"key": made_up.public.hex(), "kem": "00" * 32, "actors": {"ab" * 16: True}}
        },
    }
    # Unsigned by anyone the group knows: no bundle carries it.
    unsigned = LedgerDoc.load(ben.ledger(gid).doc.save(), bytes.fromhex("ab" * 16))
    with unsigned.edit() as w:
        w.put("members", "mallory", card)  # type: ignore[arg-type]
    refused(
        fay,
        gid,
        snapshot(ben, gid, doc=unsigned, device=made_up),
        bundles(ben, gid),
        "a snapshot holding 1 change(s) that no bundle it covers carries",
    )
    # Signed by Ben, a member, in his own feed: not his to write.
    forged = signed_by_ben(ben, gid, card, "mallory")
    refused(
        fay,
        gid,
        snapshot(ben, gid, doc=forged, device=made_up),
        bundles(ben, gid),
        "a change to someone else's membership by a member who is not an admin",
    )
    caught_up_from_bundles(fay, ada, gid)
    assert "Mallory" not in {m.name for m in fay.view(gid).members()}


def test_feed_heads_claimed_ahead_of_what_the_snapshot_holds_are_refused(
    group: tuple[Node, Node, Node, str],
) -> None:
    ada, ben, fay, gid = group
    heads = ben.feeds.heads(gid)
    author, seq, _ = heads[0]
    ahead = [(author, seq + 5, os.urandom(32)), *heads[1:]]
    refused(
        fay,
        gid,
        snapshot(ben, gid, heads=ahead),
        bundles(ben, gid),
        f"bundle {seq + 1} of device {author.hex()[:12]} did not come with it",
    )
    # Heads one bundle further than the document: the bundle came, its change did not.
    before_last = LedgerDoc.load(ben.ledger(gid).doc.save(), ben.group(gid).actor)
    with ada.change() as ledger:
        ledger.add_resource("Late ladder", kind=Kind.TOOL)
    for envelope in bundles(ada, gid):
        take_in(ben, envelope, source="test")
    refused(
        fay,
        gid,
        snapshot(ben, gid, doc=before_last),
        bundles(ben, gid),
        "a snapshot lacking 1 change(s) that its bundles carry",
    )
    # A head whose id is not that of the bundle at its seq.
    wrong = [(a, s, os.urandom(32) if a == author else i) for a, s, i in ben.feeds.heads(gid)]
    refused(
        fay,
        gid,
        snapshot(ben, gid, heads=wrong),
        bundles(ben, gid),
        "that is not the bundle it holds",
    )
    caught_up_from_bundles(fay, ada, gid)


def test_a_snapshot_from_a_removed_device_is_refused(
    group: tuple[Node, Node, Node, str],
) -> None:
    ada, ben, fay, gid = group
    member_changes.remove_member(ada, gid, "Ben")
    for envelope in bundles(ada, gid):
        take_in(ben, envelope, source="test")
    assert ben.view(gid).member(ben.identity.member_id).status == "removed"
    refused(
        fay,
        gid,
        snapshot(ben, gid),
        bundles(ben, gid),
        "its bundles are taken one by one",
    )
    caught_up_from_bundles(fay, ada, gid)
    assert "Ben" not in {m.name for m in fay.view(gid).members()}


def test_a_change_under_an_actor_id_listed_only_later_is_refused(
    group: tuple[Node, Node, Node, str],
) -> None:
    """R2 over time: Ben signs a bundle under an actor id his card does not list, then a
    bundle adding it to his card. One by one, the first never counts; a snapshot holding
    both is refused rather than counting it."""
    ada, ben, fay, gid = group
    fresh = os.urandom(16)
    doc = LedgerDoc.load(ben.ledger(gid).doc.save(), fresh)
    with doc.edit() as w:
        w.put("resources", "b" * 32, {"name": "Ben's hidden box"})
    with ben.store.write():
        ben.feeds.seal_local(
            gid, [(LIVE, c, [("resources", "b" * 32)]) for c in doc.last_edit.changes]
        )
    mine = ben.identity.device_key.public
    card = next(c for c in membership_rules.cards(ben.view(gid).tables["members"]) if c.key == mine)
    doc.actor = ben.group(gid).actor
    entry = ben.identity.member_id
    with doc.edit() as w:
        w.put("members", entry, {"devices": {card.device_id: {"actors": {fresh.hex(): True}}}})
    with ben.store.write():
        ben.feeds.seal_local(gid, [(LIVE, c, [("members", entry)]) for c in doc.last_edit.changes])
    refused(
        fay,
        gid,
        snapshot(ben, gid, doc=doc),
        bundles(ben, gid),
        "under an actor id its author's card did not list yet",
    )
    caught_up_from_bundles(fay, ada, gid)
    assert "Ben's hidden box" not in {r.name for r in fay.view(gid).resources()}


class _SignsAsAnother:
    """A device key that names one device and signs with another's key."""

    def __init__(self, public: bytes) -> None:
        self.public = public
        self._key = SigningKey.generate()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def opened_elsewhere(fay: Node, carried: list[bytes]) -> Opener:
    """An opener that hands every bundle to its second process, one at a time."""
    opener = Opener(fay, process_from=1, chunk=1)
    for envelope in carried:
        opener.add(envelope)
    assert opener.sent_away == len(carried)
    return opener


def test_bundles_opened_in_a_second_process_give_the_same_snapshot(
    group: tuple[Node, Node, Node, str],
) -> None:
    _, ben, fay, gid = group
    carried = bundles(ben, gid)
    outcome, taken = take_snapshot(
        fay, snapshot(ben, gid), opened_elsewhere(fay, carried), source="test"
    )
    assert outcome.verdict is Verdict.APPLIED, outcome.reason
    assert len(taken) == len(carried)
    assert {f"Ladder {i}" for i in range(3)} <= {r.name for r in fay.view(gid).resources()}


def test_a_bundle_whose_signature_fails_in_the_second_process_refuses_the_snapshot(
    group: tuple[Node, Node, Node, str],
) -> None:
    """Every check still runs where the bundles are opened: one covered bundle sealed
    again under a signature its author did not make is refused there."""
    _, ben, fay, gid = group
    carried = bundles(ben, gid)
    keys = ben.feeds.current_keys(gid)
    inner = open_envelope(parse_envelope(carried[-1]), keys)
    forged = seal_bundle(
        inner,
        keys=keys,
        device=_SignsAsAnother(inner.author),  # type: ignore[arg-type]
        salt=os.urandom(32),
    )
    carried[-1] = forged.encode()
    before = state(fay, gid)
    outcome, taken = take_snapshot(
        fay, snapshot(ben, gid), opened_elsewhere(fay, carried), source="test"
    )
    assert outcome.verdict is Verdict.REJECTED
    assert "does not open or verify" in outcome.reason
    assert "signature does not verify" in outcome.reason
    assert not taken
    assert state(fay, gid) == before


def test_bundles_given_to_a_second_process_that_dies_are_opened_here(
    group: tuple[Node, Node, Node, str],
) -> None:
    _, ben, fay, gid = group
    carried = bundles(ben, gid)
    opener = Opener(fay, process_from=1, chunk=1)
    opener.add(carried[0])
    worker = opener._worker
    assert worker is not None
    worker._process.kill()
    for envelope in carried[1:]:
        opener.add(envelope)
    outcome, taken = take_snapshot(fay, snapshot(ben, gid), opener, source="test")
    assert outcome.verdict is Verdict.APPLIED, outcome.reason
    assert len(taken) == len(carried)
