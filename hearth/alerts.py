"""What a group's admins must look at about who is in the group (docs/security.md).

Each alert is derived from what the node holds, so it reads the same on every admin's
node and goes away on all of them once one admin acts:

- a device caught signing two versions of one place in its feed (R4) that no admin has
  removed yet: nothing it writes counts any more;
- two admins who removed each other at the same moment, or one removed who then wrote a
  removal of the one who removed them (from a copy of their node made before, say): R7
  lets the senior one stand, and every admin is told, in case the senior one is not who
  should stand (a stolen device of theirs, say);
- a device that tried to join with an invite another device had used already (R14).

`hearth status`, `hearth doctor`, `hearth conflicts`, `hearth member list` and the app's
Problems tab show them to admins; nobody else is alerted.
"""

from __future__ import annotations

from dataclasses import dataclass

from hearth import membership
from hearth.ledger.ledger import LIVE
from hearth.node import Node
from hearth.protocol.bundle import decode_changes
from hearth.retraction import NOTICE_DAYS, opened

__all__ = ["AdminAlert", "admin_alerts"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminAlert:
    """One thing about the group's membership an admin must look at."""

    kind: str  # "equivocation", "counter-removal" or "second-claim"
    member: str  # the name of the member it is about
    what: str  # what happened, in a sentence a member understands
    advice: str  # what to do about it, with the command
    device: str = ""  # for "equivocation": the id of the device to remove

    def as_json(self) -> dict[str, str]:
        """The alert as `--json` output shows it."""
        return {
            "kind": self.kind,
            "member": self.member,
            "device": self.device,
            "what": self.what,
            "advice": self.advice,
        }


def admin_alerts(node: Node, group_id: str) -> list[AdminAlert]:
    """What this node's member must act on as an admin (nothing for anyone else)."""
    members = node.view(group_id).tables["members"]
    me = members.get(node.identity.member_id, {})
    if membership.is_gone(me) or (
        membership.effective_role(members, node.identity.member_id) != "admin"
    ):
        return []
    return _equivocations(node, group_id) + _counter_removals(node, group_id) + _second_claims(node)


def _equivocations(node: Node, group_id: str) -> list[AdminAlert]:
    view = node.view(group_id)
    caught = node.feeds.equivocations(group_id)
    alerts = []
    for card in membership.cards(view.tables["members"]):
        if card.key not in caught or card.cutoff is not None:
            continue
        name = view.member_name(card.member_id)
        alerts.append(
            AdminAlert(
                kind="equivocation",
                member=name,
                device=card.device_id,
                what=(
                    f"a device of {name} signed two versions of one change (a copied or "
                    "restored device), so nothing it writes counts any more"
                ),
                advice=f"remove it: `hearth device remove {card.device_id}`",
            )
        )
    return alerts


def _counter_removals(node: Node, group_id: str) -> list[AdminAlert]:
    """Members removed by someone whom they, in a bundle that did not count, removed or
    demoted in turn: R7 let the senior of the two stand."""
    view = node.view(group_id)
    members = view.tables["members"]
    alerts = []
    found: set[tuple[str, str]] = set()
    for card in membership.cards(members):
        removal = members.get(card.member_id, {}).get("removed")
        remover = removal.get("created_by") if isinstance(removal, dict) else None
        if card.cutoff is None or not isinstance(remover, str) or remover == card.member_id:
            continue
        if (card.member_id, remover) in found:
            continue
        for stored in node.feeds.invalid(group_id):
            if stored.author != card.key or stored.seq <= card.cutoff:
                continue
            inner = opened(node, stored)
            if inner is None or inner.kind != "content":
                continue
            changes = [c for name, c, _ in decode_changes(inner.payload) if name == LIVE]
            # The document is loaded only here, for a bundle that did not count: the app
            # asks for alerts at start and must not wait on the load (Node.warm_up).
            document = node.ledger(group_id).doc
            if document.writes_fields(changes, "members", remover, ("removed", "role")):
                found.add((card.member_id, remover))
                junior, senior = view.member_name(card.member_id), view.member_name(remover)
                alerts.append(
                    AdminAlert(
                        kind="counter-removal",
                        member=junior,
                        what=(
                            f"{senior} and {junior} each tried to take the other out of the "
                            f"group; {senior} has been an admin longer, so {senior}'s removal "
                            f"of {junior} stands and {junior}'s of {senior} does not count"
                        ),
                        advice=(
                            f"if {senior} should not be in the group (a lost or stolen "
                            f"device?), remove them now: `hearth member remove {senior}`"
                        ),
                    )
                )
                break
    return alerts


def _second_claims(node: Node) -> list[AdminAlert]:
    """Devices that tried to join with an invite another device had used (R14), in the
    last weeks: a token passed on, or copied."""
    since = node.clock.now_ms() - NOTICE_DAYS * 86_400_000
    rows = node.store.query(
        "SELECT reason FROM rejections WHERE source = 'second-claim' AND at >= ? ORDER BY at",
        (since,),
    )
    return [
        AdminAlert(
            kind="second-claim",
            member="",
            what=str(reason),
            advice=(
                "if they should be in the group, invite them again (`hearth invite`); a join "
                "token works once, so keep new ones private"
            ),
        )
        for (reason,) in rows
    ]
