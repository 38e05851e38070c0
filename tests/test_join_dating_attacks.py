"""Attacks on R7a (docs/security.md): a join claim counts only dated no earlier than its
invite's ``join_not_before``. Can an inviter, a newcomer or a removed member make a claim
count that should not, stop an honest one from counting, or split the nodes' lists?"""

from __future__ import annotations

from pathlib import Path

from hearth.ledger import Kind
from hearth.node.node import Node
from tests.test_membership import deliver, exchange, make_group, new_node


def _members(node: Node, gid: str) -> list[str]:
    return sorted(m.name for m in node.view(gid).members())


def test_an_admin_moving_join_not_before_after_a_claim_splits_no_one(tmp_path: Path) -> None:
    """Ada (admin) invites Cat, whose claim is dated when the invite was made and counts
    where it arrives first (Obs). Then Ada's modified client moves the invite's
    ``join_not_before`` past Cat's joining. Judged against the invite as each node holds
    it when the claim arrives, Cat counted on Obs (who had the claim before the edit)
    but not on Dan (who had the edit first): two lists of members. The invite's date
    is fixed once it is recorded, for admins too, so the edit never counts, and Cat is
    in on every honest node."""
    nodes = make_group(tmp_path, ["Ada", "Obs", "Dan"])
    ada, obs, dan = nodes
    gid = ada.current_group().id
    cat = new_node(tmp_path, "Cat", ada.clock)
    token = ada.create_invite(for_device=cat.identity.device_key.public)
    exchange(nodes)
    cat.join_with_token(token)
    with cat.change(gid) as ledger:
        ledger.add_resource("Cat's box", kind=Kind.OTHER)
    deliver(cat, obs, gid)  # Obs counts Cat's claim: its invite says nothing against it
    assert "Cat" in _members(obs, gid)
    with ada.change(gid) as ledger, ledger._edit() as w:
        w.put("invites", token.invite_id, {"join_not_before": token.join_not_before + 10**9})
    deliver(ada, dan, gid)  # Dan holds the moved date before the claim
    everyone = [*nodes, cat]
    exchange(everyone)
    # Ada's own node holds what her client wrote; every other node judges it.
    lists = {node.identity.name: _members(node, gid) for node in (obs, dan, cat)}
    assert len({tuple(v) for v in lists.values()}) == 1, lists
    assert "Cat" in lists["Dan"], lists
    for node in everyone:
        node.close()
