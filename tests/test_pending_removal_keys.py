"""R8 with the keys, attacked: a member whose removal waits to be written again is out
for the keys (docs/security.md R8, hearth/group/pending_removals.py) — on every device of
theirs, also one they add while they wait."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.group import member_changes
from hearth.group.rotation import keep_keys
from hearth.ledger import Kind
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node
from tests.test_membership import deliver, make_group, resource_names


def _waiting_removal_of_dan(
    tmp_path: Path, *, dan_admin: bool = False
) -> tuple[list[Node], str, bytes]:
    """Ada, Ben (admins), Cat, Dan, Eve: Ben removes Dan on top of a bundle of Cat's that
    Cat's device signed a second one for. Ada and Eve hold both versions, so Ben's
    removal waits to be written again there (Ben's node, which made the key without
    Dan, is away); the id of that key."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Dan", "Eve"], seed=3)
    ada, ben, cat, _, eve = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    if dan_admin:
        member_changes.promote(ada, gid, "Dan")
    for node in nodes[1:]:
        deliver(ada, node, gid)
    with cat.change() as ledger:
        ledger.add_resource("Cat's first", kind=Kind.TOOL)
    mine = cat.identity.device_key.public
    first = max((b for b in cat.feeds.all(gid) if b.author == mine), key=lambda b: b.seq)
    deliver(cat, ben, gid)
    with cat.store.write():
        cat.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
        cat.feeds.seal_local(
            gid, [("live", c, []) for c in cat.ledger(gid).doc.changes_since([])[-1:]]
        )
    member_changes.remove_member(ben, gid, "Dan")
    without_dan = ben.feeds.current_keys(gid).epoch_id
    for witness in (eve, ada):
        deliver(ben, witness, gid)
        deliver(cat, witness, gid)
        assert "Dan" in [m.name for m in witness.view(gid).members()]
    return nodes, gid, without_dan


def test_a_device_added_while_the_removal_waits_gets_no_key(tmp_path: Path) -> None:
    """Dan, listed still, adds a second device with a device invite of his own while
    Ben's node is away: no node hands it, nor makes for it, a key made without Dan, and
    what Eve writes meanwhile stays closed to him."""
    nodes, gid, without_dan = _waiting_removal_of_dan(tmp_path)
    ada, ben, cat, dan, eve = nodes
    create_identity(tmp_path / "Dan2", name="Dan", member=dan.identity.member_key)
    dan2 = open_node(tmp_path / "Dan2", clock=dan.clock)
    dan2.join_with_token(dan.create_invite(device=True), as_device=True)
    deliver(dan, dan2, gid)
    assert dan2.claim_device(gid)
    deliver(dan2, dan, gid)  # Dan's node confirms its own device's claim
    for witness in (eve, ada):
        for source in (dan, dan2):
            deliver(source, witness, gid)
        cards = witness.view(gid).tables["members"][dan.identity.member_id]["devices"]
        assert isinstance(cards, dict)
        assert len(cards) == 2, witness.identity.name
    for _ in range(2):
        for honest in (eve, ada, cat):
            keep_keys(honest, gid)
            deliver(honest, dan2, gid)
    with eve.change() as ledger:
        ledger.add_resource("Eve's secret stash", kind=Kind.FOOD)
    for source in (eve, ada, cat):
        deliver(source, dan2, gid)
    held = {k.epoch_id for _, k in dan2.feeds.epochs(gid)}
    assert without_dan not in held
    assert "Eve's secret stash" not in resource_names(dan2)
    # Ben's node comes back and writes the removal again: both of Dan's devices are out.
    deliver(cat, ben, gid)
    _settle_without_dan([ada, ben, cat, eve], gid)
    for node in (*nodes, dan2):
        node.close()


def test_a_member_who_writes_his_entry_anew_while_the_removal_waits_gets_no_key(
    tmp_path: Path,
) -> None:
    """Dan writes his own entry in the members table again as a new map, the same
    values in it: the waiting removal wrote into the old one."""
    nodes, gid, without_dan = _waiting_removal_of_dan(tmp_path)
    ada, ben, cat, dan, eve = nodes
    me = dan.identity.member_id
    with dan.change(gid) as ledger:
        raw = ledger.doc.read_entry("members", me)
        assert raw is not None
        with ledger._edit() as w:
            w.delete("members", me)
            w.put("members", me, raw)  # type: ignore[arg-type]
    verdicts = {}
    for witness in (eve, ada):
        verdicts[witness.identity.name] = deliver(dan, witness, gid)
    for _ in range(2):
        for honest in (eve, ada, cat):
            keep_keys(honest, gid)
            deliver(honest, dan, gid)
    held = {k.epoch_id for _, k in dan.feeds.epochs(gid)}
    assert without_dan not in held, verdicts
    deliver(cat, ben, gid)  # Ben's node comes back: it writes the removal again
    _settle_without_dan([ada, ben, cat, eve], gid)
    for node in nodes:
        node.close()


def test_an_admin_whose_removal_waits_makes_no_key_that_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dan is an admin too. While Ben's removal of him waits, his modified client makes
    a new group key sealed to everyone, himself included, and publishes it: honest nodes
    must not seal what they write under it."""
    from hearth.group import rotation

    nodes, gid, without_dan = _waiting_removal_of_dan(tmp_path, dan_admin=True)
    ada, _, cat, dan, eve = nodes
    monkeypatch.setattr(rotation, "_out", lambda node, group_id, view: frozenset())
    rotation.rotate(dan, gid)
    monkeypatch.undo()
    danger = dan.feeds.current_keys(gid).epoch_id
    for witness in (eve, ada):
        deliver(dan, witness, gid)
    for _ in range(2):
        for honest in (eve, ada, cat):
            keep_keys(honest, gid)
            for other in (eve, ada, cat):
                if other is not honest:
                    deliver(honest, other, gid)
    with eve.change() as ledger:
        ledger.add_resource("Eve's secret stash", kind=Kind.FOOD)
    assert eve.feeds.current_keys(gid).epoch_id != danger
    for source in (eve, ada, cat):
        deliver(source, dan, gid)
    assert without_dan not in {k.epoch_id for _, k in dan.feeds.epochs(gid)}
    assert "Eve's secret stash" not in resource_names(dan)
    for node in nodes:
        node.close()


def _settle_without_dan(everyone: list[Node], gid: str) -> None:
    """Let the honest nodes meet until they agree, then check Dan is out on each."""
    for _ in range(3):
        for node in everyone:
            keep_keys(node, gid)
        for source in everyone:
            for target in everyone:
                if source is not target:
                    deliver(source, target, gid)
    for node in everyone:
        assert "Dan" not in [m.name for m in node.view(gid).members()], node.identity.name
