"""Bundles between nodes: join tokens, the intake's checks, gaps and bad input."""

from __future__ import annotations

import base64
import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from hearth.crypto import SigningKey
from hearth.errors import NotAuthorized, UsageError
from hearth.ledger import Kind
from hearth.node.feeds import REFUSED
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node
from hearth.protocol import codec
from hearth.protocol.bundle import PAD_BUCKETS, EpochKeys, Inner, parse_envelope, seal_bundle
from hearth.protocol.invite_token import decode_token, encode_token
from hearth.testing import FakeClock
from hearth.validity.intake import Verdict, take_in
from hearth.validity.retraction import removal_notices


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[Node]]:
    clock = FakeClock(step=1000)
    nodes = []
    for name in ("Ada", "Ben", "Eve"):
        create_identity(tmp_path / name, name=name)
        nodes.append(open_node(tmp_path / name, clock=clock))
    ada, ben, _ = nodes
    ada.create_group("Allotment")
    with ada.change() as ledger:
        ledger.add_resource("Spade", kind=Kind.TOOL)
    ben.join_with_token(ada.create_invite())
    yield nodes
    for node in nodes:
        node.close()


def deliver(source: Node, target: Node) -> list[Verdict]:
    group = source.current_group().id
    return [take_in(target, b.envelope, source="test").verdict for b in source.feeds.all(group)]


def names(node: Node) -> set[str]:
    return {r.name for r in node.view().resources()}


def test_token_round_trip_and_damage() -> None:
    from hearth.protocol.invite_token import Token

    token = Token(
        group_id="ab" * 32,
        group_name="G",
        genesis=b"{}",
        epochs=((0, b"e" * 32, b"s" * 32),),
        relays=("ws://127.0.0.1:1",),
        invite_id="i" * 32,
        invite_secret=b"k" * 32,
        expires_at=5,
        join_not_before=3,
    )
    text = encode_token(token)
    assert decode_token(text) == token
    assert "kkkk" not in repr(token)
    for bad in ("nonsense", text[:-10], text.replace("hearth-token-1.", "hearth-token-1.AB")):
        with pytest.raises(UsageError):
            decode_token(bad)
    # What is not part of a token's alphabet is what a copy from a terminal brought along.
    assert decode_token(text.replace("hearth-token-1.", "hearth-token-1.!!\n ")) == token
    # One letter changed anywhere is refused plainly (the checksum), not taken as another token.
    start = len("hearth-token-1.")
    for at in range(start, len(text) - 2, 5):
        changed = text[:at] + ("B" if text[at] == "A" else "A") + text[at + 1 :]
        with pytest.raises(UsageError, match="damaged"):
            decode_token(changed)
    # A token made before checksums (nine fields), or before it carried when its invite
    # was made (ten), still works: its joiner dates its joining by its own clock.
    encoded = text[start:]
    fields = codec.decode(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert isinstance(fields, list)
    nine = fields[:9]
    summed = hashlib.sha256(b"hearth/v1/token-checksum\x00" + codec.encode(nine)).digest()[:4]
    for old_fields in (nine, [*nine, summed]):
        old = "hearth-token-1." + base64.urlsafe_b64encode(codec.encode(old_fields)).decode()
        assert decode_token(old.rstrip("=")) == replace(token, join_not_before=0)


def test_join_and_converge_through_bundles(trio: list[Node]) -> None:
    ada, ben, _ = trio
    deliver(ada, ben)
    assert deliver(ben, ada).count(Verdict.APPLIED) == 1  # Ben's claim bundle
    assert [m.name for m in ada.view().members()] == ["Ada", "Ben"]
    with ben.change() as ledger:
        ledger.lend(ledger.view.find("resources", "spade"), to="Ben")  # Ben takes Ada's spade
    deliver(ben, ada)
    assert (
        ada.view().resource(ada.view().find("resources", "spade")).custodian
        == ben.identity.member_id
    )
    deliver(ada, ben)  # Ada's device confirmed Ben's join (R14): Ben takes that in
    assert sorted(ada.ledger().doc.heads()) == sorted(ben.ledger().doc.heads())
    again = deliver(ben, ada)
    assert set(again) == {Verdict.DUPLICATE}


def test_only_admins_invite_and_tokens_expire(trio: list[Node]) -> None:
    ada, ben, eve = trio
    deliver(ada, ben)
    with pytest.raises(NotAuthorized):
        ben.create_invite()
    token = ada.create_invite(valid_for_ms=1000)
    ada.clock.advance(10_000)  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="expired"):
        eve.join_with_token(token)
    assert eve.groups() == []


def test_out_of_order_bundles_wait_then_apply(trio: list[Node]) -> None:
    ada, ben, _ = trio
    deliver(ada, ben)
    for i in range(4):
        with ada.change() as ledger:
            ledger.add_resource(f"Tool {i}")
    bundles = ada.feeds.all(ada.current_group().id)
    late = bundles[-4:]
    verdicts = [take_in(ben, b.envelope, source="t").verdict for b in reversed(late)]
    assert verdicts[:3] == [Verdict.WAITING] * 3
    assert verdicts[3] is Verdict.APPLIED
    assert {f"Tool {i}" for i in range(4)} <= names(ben)


def test_tampered_bundles_are_rejected_and_change_nothing(trio: list[Node]) -> None:
    ada, ben, _ = trio
    deliver(ada, ben)
    with ada.change() as ledger:
        ledger.add_resource("Wheelbarrow")
    good = ada.feeds.all(ada.current_group().id)[-1].envelope
    before = names(ben)
    rng = random.Random(7)
    for _ in range(300):
        flipped = bytearray(good)
        position = rng.randrange(len(flipped))
        flipped[position] ^= 1 << rng.randrange(8)
        outcome = take_in(ben, bytes(flipped), source="attacker")
        assert outcome.verdict is Verdict.REJECTED, position
    for junk in (b"", b"\x00" * 10, os.urandom(600), good[:100]):
        assert take_in(ben, junk, source="attacker").verdict is Verdict.REJECTED
    assert names(ben) == before
    assert take_in(ben, good, source="honest").verdict is Verdict.APPLIED


def test_a_member_sealing_anothers_bundle_again_does_not_make_its_author_sign_twice(
    trio: list[Node],
) -> None:
    """Ben, a member, holds the epoch's keys: he seals Ada's bundle again with one byte of
    padding changed (her signature does not cover it) and passes the copy on. Taken as a
    second bundle for her seq, it would cut Ada, the admin, off on every node (R4)."""
    from tests.test_neighbourhood_attacks import repadded

    ada, ben, _ = trio
    deliver(ada, ben)
    group = ada.current_group().id
    with ada.change() as ledger:
        ledger.add_resource("Wheelbarrow")
    good = parse_envelope(ada.feeds.all(group)[-1].envelope)
    deliver(ada, ben)
    copy = repadded(good, ben.feeds.current_keys(group)).encode()
    for node in (ada, ben):
        assert take_in(node, copy, source="Ben").verdict is Verdict.REJECTED
        assert node.feeds.equivocations(group) == {}
    with ada.change() as ledger:
        ledger.add_resource("Rake")
    deliver(ada, ben)
    assert {"Wheelbarrow", "Rake"} <= names(ben)
    # A copy kept as a proof by a Hearth from before they were refused is passed over.
    from hearth.protocol.bundle import open_envelope
    from hearth.validity.retraction import second_bundles

    inner = open_envelope(good, ben.feeds.current_keys(group))
    ben.feeds.keep_equivocation(group, parse_envelope(copy), inner)
    assert second_bundles(ben, group) == []  # not a failure to open: nothing to count


def test_bundle_for_another_group_is_rejected(trio: list[Node]) -> None:
    ada, _, eve = trio
    eve.create_group("Other")
    with eve.change() as ledger:
        ledger.add_resource("Hammer")
    for bundle in eve.feeds.all(eve.current_group().id):
        outcome = take_in(ada, bundle.envelope, source="t")
        assert outcome.verdict is Verdict.REJECTED
        assert "not in" in outcome.reason


def test_stolen_actor_ids_are_rejected(trio: list[Node]) -> None:
    """Ben writes a change under Ada's actor id: his bundle must be refused."""
    from hearth.ledger import Ledger, LedgerDoc
    from hearth.testing import seeded_ids

    ada, ben, _ = trio
    deliver(ada, ben)
    deliver(ben, ada)
    deliver(ada, ben)  # with Ada's confirmation of his join
    group = ada.current_group()
    forged_doc = LedgerDoc.load(ben.ledger().doc.save(), group.actor)  # Ada's actor
    forger = Ledger(
        forged_doc, author=ben.identity.member_id, clock=FakeClock(), new_id=seeded_ids(1)
    )
    forger.add_resource("Forged")
    changes = [c for _, e in forger.take_outbox() for c in e.changes]
    with ben.store.write():
        envelope = ben.feeds.seal_local(group.id, [("live", c, []) for c in changes])
    outcome = take_in(ada, envelope.encode(), source="ben")
    assert outcome.verdict is Verdict.REJECTED
    assert "actor id" in outcome.reason
    assert "Forged" not in names(ada)


def test_equivocation_is_rejected(trio: list[Node]) -> None:
    ada, ben, _ = trio
    deliver(ada, ben)
    group = ada.current_group().id
    with ada.change() as ledger:
        ledger.add_resource("One")
    first = ada.feeds.all(group)[-1]
    take_in(ben, first.envelope, source="t")
    # Ada's device makes a different bundle with the same seq (as a broken device might).
    with ada.store.write():
        ada.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
        ledger = ada.ledger()
        other = ada.feeds.seal_local(
            group, [("live", c, []) for c in ledger.doc.changes_since([])[-1:]]
        )
    outcome = take_in(ben, other.encode(), source="t")
    assert outcome.verdict is Verdict.REJECTED
    assert "equivocation" in outcome.reason
    # R4: the device is treated as removed from the seq before; "One" no longer counts,
    # Ben is told, and he passes the proof on so others judge alike.
    assert "One" not in names(ben)
    assert any("two different versions" in what for _, what in removal_notices(ben))
    passed_on = {e for _, e in ben.feeds.lacking(other.topic, {})}
    assert other.encode() in passed_on


def test_ciphertexts_fall_in_the_padding_buckets(trio: list[Node]) -> None:
    ada, _, _ = trio
    with ada.change() as ledger:
        ledger.add_resource("x" * 90, note="y" * 1900, quantity=Decimal(3))
    for bundle in ada.feeds.all(ada.current_group().id):
        assert len(parse_envelope(bundle.envelope).ciphertext) in PAD_BUCKETS


def test_a_device_never_writes_two_bundles_at_one_seq_of_its_feed(trio: list[Node]) -> None:
    """Its own newest bundle may wait or not count on its own node (judged again after a
    removal was undone); the next one it writes still follows it, or everyone would see a
    broken device (R4)."""
    ada, _, _ = trio
    group = ada.current_group().id
    with ada.change() as ledger:
        ledger.add_resource("One")
    mine = ada.identity.device_key.public
    newest = max((b for b in ada.feeds.all(group) if b.author == mine), key=lambda b: b.seq)
    with ada.store.write():
        ada.feeds.set_state(newest.id, REFUSED)
    with ada.change() as ledger:
        ledger.add_resource("Two")
    after = max((b for b in ada.feeds.all(group) if b.author == mine), key=lambda b: b.seq)
    assert after.seq == newest.seq + 1
    assert after.prev == newest.id


@pytest.mark.parametrize("claimed", [[], [("resources", "0" * 32)], None])
def test_what_a_bundle_says_it_touched_does_not_decide_what_others_see(
    trio: list[Node], claimed: list[tuple[str, str]] | None
) -> None:
    """Ben's device lists no entries, or the wrong one, for a change that adds a resource
    and edits another: the bundle is refused (R2a judges a change by the entries its
    bundle names, so a change writing outside them is refused, docs/security.md §6), and
    Ada's app shows exactly what her document has. The same changes listed rightly count."""
    from hearth.ledger import Ledger, LedgerDoc
    from hearth.ledger.view import LedgerView
    from hearth.testing import seeded_ids

    ada, ben, _ = trio
    deliver(ada, ben)
    deliver(ben, ada)
    group = ben.current_group()
    spade = ben.view().find("resources", "Spade")
    doc = LedgerDoc.load(ben.ledger().doc.save(), group.actor)
    writer = Ledger(doc, author=ben.identity.member_id, clock=FakeClock(), new_id=seeded_ids(2))
    trowel = writer.add_resource("Trowel", kind=Kind.TOOL)
    writer.edit_resource(spade, note="handle mended")
    changes = [c for _, e in writer.take_outbox() for c in e.changes]
    touched = [] if claimed is None else claimed
    if claimed is None:  # the right entries, but one of them named wrongly
        touched = [("resources", spade[::-1])]
    with ben.store.write():
        lying = ben.feeds.seal_local(group.id, [("live", c, touched) for c in changes])
    outcome = take_in(ada, lying.encode(), source="ben")
    assert outcome.verdict is Verdict.REJECTED
    assert "does not name" in outcome.reason
    assert "Trowel" not in names(ada)
    fresh = LedgerView()
    fresh.rebuild(ada.ledger().docs())
    assert fresh.tables == ada.view().tables
    right = [("resources", trowel.id), ("resources", spade)]
    with ben.store.write():
        ben.store.run("DELETE FROM bundles WHERE id = ?", (lying.id,))
        honest = ben.feeds.seal_local(group.id, [("live", c, right) for c in changes])
    assert take_in(ada, honest.encode(), source="ben").verdict is Verdict.APPLIED
    assert "Trowel" in names(ada)
    assert ada.view().resource(spade).note == "handle mended"
    fresh.rebuild(ada.ledger().docs())
    assert fresh.tables == ada.view().tables


def test_an_envelope_has_one_id_however_its_fields_were_encoded() -> None:
    # parse_envelope hashes the id from the bytes it was given when they are the shortest
    # encoding; the same fields encoded longer (a padded number) still get the same id.
    keys = EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
    device = SigningKey.generate()
    for size in (10, 5_000):  # two padding buckets
        inner = Inner(
            kind="content",
            group_id=keys.group_id,
            epoch_id=keys.epoch_id,
            author=device.public,
            seq=1,
            prev=b"",
            auth_heads=(),
            created_at=1,
            payload=os.urandom(size),
        )
        sealed = seal_bundle(inner, keys=keys, device=device, salt=os.urandom(32))
        data = sealed.encode()
        padded = data[:2] + bytes([data[2], 0x82, 0x00]) + data[4:]  # the version, 3 bytes
        for wire in (data, padded):
            envelope = parse_envelope(wire)
            assert envelope.id == sealed.id
            assert envelope.relay_signature_valid(keys.relay_key.public)
        assert codec.decode(padded) == codec.decode(data)
