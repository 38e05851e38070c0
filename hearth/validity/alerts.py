"""What a group's admins must look at about who is in the group (docs/security.md).

Each alert is derived from what the node holds, so it reads the same on every admin's
node and goes away on all of them once one admin acts:

- a device caught signing two versions of one place in its feed (R4) that no admin has
  removed yet: nothing it writes counts any more;
- two admins who removed each other at the same moment, or one removed who then wrote a
  removal of the one who removed them (from a copy of their node made before, say): R7
  lets the senior one stand, and every admin is told, in case the senior one is not who
  should stand (a stolen device of theirs, say);
- a device that tried to join with an invite another device had used already (R14);
- in a neighbourhood (R17): a device of the group that signed two records for one place in
  its feed there, and a handover of the group's key there to a key the group does not hold
  (someone holding the key, planting a handover to keep it), as soon as it arrives.

`hearth status`, `hearth doctor`, `hearth conflicts`, `hearth member list` and the app's
Problems tab show them to admins; nobody else is alerted.
"""

from __future__ import annotations

from dataclasses import dataclass

from hearth.ledger import membership_rules
from hearth.ledger.ledger import LIVE
from hearth.neighbourhood import participation
from hearth.node.node import Node
from hearth.protocol.bundle import decode_changes
from hearth.validity.retraction import NOTICE_DAYS, opened
from hearth.values import counted

__all__ = ["AdminAlert", "admin_alerts"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminAlert:
    """One thing about the group's membership an admin must look at."""

    kind: str  # "equivocation", "counter-removal", "second-claim", "neighbourhood-equivocation"
    # or "neighbourhood-handover"
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
    if membership_rules.is_gone(me) or (
        membership_rules.effective_role(members, node.identity.member_id) != "admin"
    ):
        return []
    return (
        _equivocations(node, group_id)
        + _counter_removals(node, group_id)
        + _second_claims(node)
        + _neighbourhood(node, group_id)
    )


def _equivocations(node: Node, group_id: str) -> list[AdminAlert]:
    view = node.view(group_id)
    caught = node.feeds.equivocations(group_id)
    alerts = []
    for card in membership_rules.cards(view.tables["members"]):
        if card.key not in caught or card.cutoff is not None:
            continue
        name = view.member_name(card.member_id)
        cut = _changes_cut(node, group_id, card.key, caught[card.key])
        alerts.append(
            AdminAlert(
                kind="equivocation",
                member=name,
                device=card.device_id,
                what=(
                    f"a device of {name} signed two versions of one change (a copied or "
                    "restored device), so nothing it writes counts any more; "
                    f"{counted(cut, 'change')} it wrote from then on "
                    f"{'was' if cut == 1 else 'were'} cut"
                ),
                advice=f"remove it: `hearth device remove {card.device_id}`",
            )
        )
    return alerts


def _changes_cut(node: Node, group_id: str, device: bytes, seq: int) -> int:
    """How many changes of ``device``, from its feed's ``seq`` on, do not count (those of
    bundles this node cannot open are not counted)."""
    cut = 0
    for stored in node.feeds.invalid(group_id):
        if stored.author != device or stored.seq < seq:
            continue
        inner = opened(node, stored)
        if inner is not None and inner.kind == "content":
            cut += len(decode_changes(inner.payload))
    return cut


def _counter_removals(node: Node, group_id: str) -> list[AdminAlert]:
    """Members removed by someone whom they, in a bundle that did not count, removed or
    demoted in turn: R7 let the senior of the two stand."""
    view = node.view(group_id)
    members = view.tables["members"]
    alerts = []
    found: set[tuple[str, str]] = set()
    for card in membership_rules.cards(members):
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
    return [
        AdminAlert(
            kind="second-claim",
            member="",
            what=reason,
            advice=(
                "if they should be in the group, invite them again (`hearth invite`); a join "
                "token works once, so keep new ones private"
            ),
        )
        for reason in node.store.second_claim_notices(since)
    ]


def _neighbourhood(node: Node, group_id: str) -> list[AdminAlert]:
    """What devices of the group, or whoever holds its key, did in its neighbourhoods that
    the admins must know of at once."""
    view = node.view(group_id)
    cards = {c.key: c for c in membership_rules.cards(view.tables["members"])}

    def whose(device: bytes) -> tuple[str, str]:
        card = cards.get(device)
        if card is None:
            return "someone outside the group", ""
        return view.member_name(card.member_id), card.device_id

    alerts = []
    for hood in participation.memberships(node, group_id):
        current = participation.state(node, hood)
        for device, seq in sorted(current.equivocations.items()):
            name, device_id = whose(device)
            if not device_id or cards[device].cutoff is not None:
                continue
            alerts.append(
                AdminAlert(
                    kind="neighbourhood-equivocation",
                    member=name,
                    device=device_id,
                    what=(
                        f"a device of {name} signed two different records for place {seq} "
                        f"of its feed in '{hood.name}', so nothing it says there from then "
                        "on counts"
                    ),
                    advice=f"remove it: `hearth device remove {device_id}`",
                )
            )
        for record in current.keys.handovers:
            if record.group not in hood.held or record.blob("successor") in hood.held:
                continue
            name, device_id = whose(record.author)
            stands = current.keys.current(record.group) == record.blob("successor")
            still_in = bool(device_id) and cards[record.author].cutoff is None
            if not (stands or still_in):
                continue  # by someone gone, and it does not stand: nothing came of it
            alerts.append(
                AdminAlert(
                    kind="neighbourhood-handover",
                    member=name,
                    device=device_id,
                    what=(
                        f"{name} handed the group's key in '{hood.name}' on to a key the "
                        "group does not hold"
                        + (
                            ": for now it stands, so the group's word there is theirs"
                            if stands
                            else ""
                        )
                    ),
                    advice=(
                        f"if {name} should not speak for the group, remove them "
                        f"(`hearth member remove {name}`): the handover that follows lists "
                        "them as gone, and theirs never stands"
                        if still_in
                        else "ask an admin of a neighbour group to invite yours again"
                    ),
                )
            )
    return alerts
