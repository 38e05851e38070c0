"""A newcomer's join between in-process nodes: what she writes while her claim waits on
her own node (R3, R12), and when she counts as having joined — R7's fallback ranks by it
(R7a, also inside a snapshot, R13)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hearth.errors import NotAuthorized
from hearth.group import member_changes
from hearth.group.rotation import keep_keys
from hearth.ledger import Kind, membership_rules
from hearth.ledger.ledger import LIVE
from hearth.ledger.model import Role
from hearth.node.node import Node
from hearth.protocol.bundle import encode_snapshot
from hearth.testing import FakeClock
from hearth.validity.intake import Verdict, take_in, take_snapshot
from hearth.validity.joins import claim_standing
from tests.test_membership import deliver, exchange, make_group, new_node, resource_names


def meet(everyone: list[Node], gid: str, rounds: int = 3) -> None:
    """Meetings of everyone with everyone, and what `hearth sync` does for the keys
    before each."""
    for _ in range(rounds):
        for node in everyone:
            keep_keys(node, gid)
        for source in everyone:
            for target in everyone:
                if source is not target:
                    deliver(source, target, gid)


def newcomer_whose_claim_waits(tmp_path: Path) -> tuple[list[Node], Node, str]:
    """Ben and Ada remove each other; Cat, holding Ben's key, invites Newt, who joins and
    writes before her node holds Cat's invite. Hearing of the rival removals, Newt's node
    judges every bundle again, its own too: her claim goes back to waiting for Cat's
    invite, and her changes are out of her document until it comes."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Obs"], seed=5)
    ada, ben, cat, _ = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    member_changes.promote(ada, gid, "Cat")
    exchange(nodes)
    member_changes.remove_member(ben, gid, "Ada")
    member_changes.remove_member(ada, gid, "Ben")
    deliver(ben, cat, gid)
    newt = new_node(tmp_path, "Newt", ada.clock, seed=5)
    newt.join_with_token(cat.create_invite(for_device=newt.identity.device_key.public))
    with newt.change(gid) as ledger:
        ledger.add_resource("Newt's trowel", kind=Kind.TOOL)
    deliver(ben, newt, gid)
    deliver(ada, newt, gid)  # a rival removal: Newt's node judges everything again
    mine = newt.identity.device_key.public
    assert [b.seq for b in newt.feeds.waiting(gid) if b.author == mine], "nothing waits"
    return nodes, newt, gid


def test_an_edit_made_while_her_claim_waits_is_refused_until_it_counts(tmp_path: Path) -> None:
    """Newt adds a rake while her claim waits on her own node. Made as it was, the rake's
    change took the place (actor and seq) of her claim's, which her document no longer
    held: once the claim counted, neither could follow the other — the rake and all
    after it waited for good, on every node, hers too. Now the rake is refused, saying
    why, with nothing kept; once her join counts here she adds it, and it counts
    everywhere, every ledger the same."""
    nodes, newt, gid = newcomer_whose_claim_waits(tmp_path)
    everyone = [*nodes, newt]
    held = len(newt.feeds.all(gid))
    refused = "Your join to 'Co-op' does not count on this device yet"
    with pytest.raises(NotAuthorized, match=refused), newt.change(gid) as ledger:
        ledger.add_resource("Newt's rake", kind=Kind.TOOL)
    assert len(newt.feeds.all(gid)) == held
    assert "Newt's rake" not in resource_names(newt)
    meet(everyone, gid)
    with newt.change(gid) as ledger:
        ledger.add_resource("Newt's rake", kind=Kind.TOOL)
    meet(everyone, gid, rounds=1)
    for node in everyone:
        assert node.feeds.waiting(gid) == [], node.identity.name
    for node in (nodes[0], nodes[2], nodes[3], newt):
        assert {"Newt's trowel", "Newt's rake"} <= resource_names(node), node.identity.name
        assert sorted(node.ledger(gid).doc.heads()) == sorted(newt.ledger(gid).doc.heads())
    for node in everyone:
        node.close()


def test_a_newcomer_cannot_date_her_joining_before_her_invite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """R7's fallback: when every admin is gone, the earliest-joined member left acts as
    one, by the ``joined_at`` a joining device writes into its own entry. Mal, invited
    after Dan joined, dates her joining at the start of time (her client leaves out the
    time her token carries and her clock is set back): her claim counts on no node. Cat,
    whose clock is honestly slow, joins too and counts, dated when her invite was made.
    When both admins leave at once, Dan — who joined first — acts as admin on every node
    (before, Mal did: her claim counted as she dated it)."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Dan"])
    ada, ben, dan = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    set_back = FakeClock(now=1_000_000, step=1000)
    mal = new_node(tmp_path, "Mal", set_back)
    mal.join_with_token(replace(ada.create_invite(), join_not_before=0))
    with mal.change(gid) as ledger:
        ledger.add_resource("Mal's box", kind=Kind.OTHER)
    assert mal.view(gid).tables["members"][mal.identity.member_id]["joined_at"] < 2_000_000
    cat = new_node(tmp_path, "Cat", FakeClock(now=1_000_000, step=1000))
    token = ada.create_invite()
    invite = ada.view(gid).tables["invites"][token.invite_id]
    assert token.join_not_before == invite["join_not_before"] == invite["created_at"]
    cat.join_with_token(token)
    with cat.change(gid) as ledger:
        ledger.add_resource("Cat's box", kind=Kind.OTHER)
    everyone = [*nodes, mal, cat]
    exchange(everyone)
    for node in (ada, ben, dan, cat):
        names = [m.name for m in node.view(gid).members()]
        assert names == ["Ada", "Ben", "Cat", "Dan"], node.identity.name
        assert "Mal's box" not in resource_names(node)
        cat_entry = node.view(gid).tables["members"][cat.identity.member_id]
        assert cat_entry["joined_at"] == token.join_not_before, node.identity.name
    assert "dates their joining before their invite was made" in caplog.text
    assert "dated before the invite you used was made" in claim_standing(mal, gid)
    assert claim_standing(cat, gid) == ""
    member_changes.leave(ada, gid)  # each admin sees the other stay
    member_changes.leave(ben, gid)
    exchange(everyone)
    for node in (ada, ben, dan, cat):
        roles = {m.name: m.role for m in node.view(gid).members()}
        assert roles == {"Cat": Role.MEMBER, "Dan": Role.ADMIN}, node.identity.name
    for node in everyone:
        node.close()


def test_a_back_dated_claim_inside_a_snapshot_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R7a and R13: Ben's node counts Mal's back-dated claim (his Hearth leaves the check
    out) and publishes a snapshot holding it. Fay, new, refuses the snapshot whole and,
    taking its bundles one by one, never lists Mal."""
    ada, ben = make_group(tmp_path, ["Ada", "Ben"])
    gid = ada.current_group().id
    mal = new_node(tmp_path, "Mal", FakeClock(now=1_000_000, step=1000))
    mal.join_with_token(replace(ada.create_invite(), join_not_before=0))
    deliver(mal, ada, gid)  # Ada's node confirms Mal's claim, then refuses it
    assert "Mal" not in [m.name for m in ada.view(gid).members()]
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    with monkeypatch.context() as patched:
        patched.setattr(membership_rules, "check_joined_at", lambda entry, invite: None)
        deliver(ada, ben, gid)
        deliver(mal, ben, gid)
    assert "Mal" in [m.name for m in ben.view(gid).members()]
    carried = [b.envelope for b in ben.feeds.all(gid)]
    forged = ben.feeds.seal_snapshot(
        gid, encode_snapshot([(LIVE, ben.ledger(gid).doc.save())], ben.feeds.heads(gid))
    ).encode()
    outcome, taken = take_snapshot(fay, forged, carried, source="test")
    assert outcome.verdict is Verdict.REJECTED
    assert "dates their joining before their invite was made" in outcome.reason
    assert not taken
    for envelope in carried:
        take_in(fay, envelope, source="test")
    assert [m.name for m in fay.view(gid).members()] == ["Ada", "Ben", "Fay"]
    for node in (ada, ben, mal, fay):
        node.close()
