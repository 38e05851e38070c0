"""A newcomer's join between in-process nodes: what she writes while her claim waits on
her own node (R3, R12), and when she counts as having joined (R7's fallback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth import members
from hearth.errors import NotAuthorized
from hearth.ledger import Kind
from hearth.node import Node
from hearth.rotation import keep_keys
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
    members.promote(ada, gid, "Ben")
    members.promote(ada, gid, "Cat")
    exchange(nodes)
    members.remove_member(ben, gid, "Ada")
    members.remove_member(ada, gid, "Ben")
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
