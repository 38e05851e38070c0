"""Changing who is in a group: remove a member or a device, promote, demote, leave.

Only admins change membership (checked here for a plain message, and by every node that
receives the change, SECURITY.md §6). Anything that takes someone's devices out of the
group also starts a new epoch, so they read nothing written afterwards
(:mod:`hearth.group.rotation`) and new keys in the group's neighbourhoods
(:func:`hearth.neighbourhood.participation.hand_on_keys`); their writes after the cutoff recorded
here count nowhere.
"""

from __future__ import annotations

from hearth import lookup
from hearth.errors import NotAuthorized, NotFound, UsageError
from hearth.group.rotation import rotate, rotation_due
from hearth.ledger import membership_rules, present
from hearth.ledger.model import Member, Role
from hearth.neighbourhood import participation
from hearth.node.node import Node
from hearth.values import format_date

__all__ = [
    "demote",
    "leave",
    "new_device_token",
    "promote",
    "remove_device",
    "remove_member",
    "standing_note",
]


def _admin(node: Node, group_id: str, doing: str) -> None:
    me = node.view(group_id).member(node.identity.member_id)
    if me.role is not Role.ADMIN or me.status != "active":
        raise NotAuthorized(f"Only the group's admins can {doing}; ask one of them.")


def _cutoffs(node: Node, group_id: str, member_id: str) -> dict[str, int]:
    """The last seq this node holds of each of a member's devices: what still counts."""
    members = node.view(group_id).tables["members"]
    return {
        card.key.hex(): node.feeds.head(group_id, card.key)[0]
        for card in membership_rules.cards(members)
        if card.member_id == member_id and card.cutoff is None
    }


def _other_admins(node: Node, group_id: str, member_id: str) -> list[Member]:
    return [m for m in node.view(group_id).members() if m.role is Role.ADMIN and m.id != member_id]


def remove_member(node: Node, group_id: str, text: str) -> Member:
    """Take a member out of the group and start a new epoch without their devices."""
    _admin(node, group_id, "remove members")
    view = node.view(group_id)
    member = view.member(view.find("members", text))
    if member.id == node.identity.member_id:
        raise UsageError("To take yourself out of the group, use `hearth leave`.")
    if member.status != "active":
        raise NotFound(f"{member.name} is no longer in the group.")
    with node.store.write():
        with node.change(group_id) as ledger:
            ledger.remove_member(member.id, _cutoffs(node, group_id, member.id))
        rotate(node, group_id)
        participation.hand_on_keys(node, group_id)
    return member


def remove_device(node: Node, group_id: str, text: str) -> tuple[Member, str]:
    """Stop one device writing for its member (a lost phone) and start a new epoch.

    A member may remove their own devices (not the one in use); admins any device.
    """
    view = node.view(group_id)
    current = {
        c.device_id: c for c in membership_rules.cards(view.tables["members"]) if c.cutoff is None
    }
    chosen = lookup.pick(
        [
            lookup.Candidate(d, present.device_name(view, c.member_id, d))
            for d, c in current.items()
        ],
        text,
        noun="device",
        listing="hearth device list --all",
    )
    cards = [current[chosen.id]]
    card = cards[0]
    if card.key == node.identity.device_key.public:
        raise UsageError("This is the device you are using; remove it from another one.")
    if card.member_id != node.identity.member_id:
        _admin(node, group_id, "remove another member's device")
    with node.store.write():
        with node.change(group_id) as ledger:
            ledger.remove_device(
                card.member_id, card.device_id, node.feeds.head(group_id, card.key)[0]
            )
        if rotation_due(node, group_id):
            rotate(node, group_id)
        participation.hand_on_keys(node, group_id)
    return view.member(card.member_id), card.device_id


def promote(node: Node, group_id: str, text: str) -> Member:
    """Make a member an admin."""
    return _set_role(node, group_id, text, Role.ADMIN)


def demote(node: Node, group_id: str, text: str) -> Member:
    """Make an admin an ordinary member; never the last admin."""
    return _set_role(node, group_id, text, Role.MEMBER)


def _set_role(node: Node, group_id: str, text: str, role: Role) -> Member:
    _admin(node, group_id, "change roles")
    view = node.view(group_id)
    member = view.member(view.find("members", text))
    if member.role is role:
        raise UsageError(
            f"{member.name} is already {'an admin' if role is Role.ADMIN else 'a member'}."
        )
    if role is Role.MEMBER and not _other_admins(node, group_id, member.id):
        raise UsageError(f"{member.name} is the group's only admin; promote someone else first.")
    with node.change(group_id) as ledger:
        ledger.set_role(member.id, role)
    return node.view(group_id).member(member.id)


def leave(node: Node, group_id: str) -> None:
    """Leave the group: this member's writes stop counting; an admin starts a new epoch.

    The group stays on this node (read-only history) until removed with its home.
    """
    me = node.view(group_id).member(node.identity.member_id)
    if me.status != "active":
        raise NotFound("You are no longer in this group.")
    if me.role is Role.ADMIN and not _other_admins(node, group_id, me.id):
        others = node.view(group_id).members()
        if len(others) > 1:
            raise UsageError(
                "You are the group's only admin; promote someone with "
                "`hearth member promote NAME` before you leave."
            )
    cutoffs = _cutoffs(node, group_id, me.id)
    mine = node.identity.device_key.public.hex()
    cutoffs[mine] = cutoffs.get(mine, 0) + 1  # the bundle that says so is the last one
    with node.change(group_id) as ledger:
        ledger.leave(cutoffs)


def standing_note(node: Node, group_id: str) -> str:
    """What a member taken out of a group (or who left it) must be told when they sync or
    ask for the status: that they are out, and what that means; empty while they are in."""
    view = node.view(group_id)
    me = node.identity.member_id
    raw = view.tables["members"].get(me, {})
    status = view.member(me).status if me in view.tables["members"] else "active"
    if status == "active":
        return ""
    mark = raw.get(status)
    by = mark.get("created_by") if isinstance(mark, dict) else None
    at = mark.get("created_at") if isinstance(mark, dict) else None
    when = f" on {format_date(at)}" if isinstance(at, int) else ""
    if status == "left":
        return (
            f"You left '{view.group_name}'{when}: you see nothing new there, and what you "
            "write there does not count."
        )
    who = f" by {view.member_name(by)}" if isinstance(by, str) and by != me else ""
    return (
        f"You were removed from '{view.group_name}'{who}{when}: the group has a new key you "
        "do not have, so you see nothing new, and what you write there no longer counts. "
        "Ask one of its admins if this is a mistake; `hearth export` keeps a copy of what "
        "you can still read."
    )


def new_device_token(node: Node, device_key: bytes) -> str:
    """What ``hearth device add`` seals to this member's new device once it has introduced
    itself with ``device_key``: an invite for that device, with the member's key and name
    (so that it writes as them)."""
    from hearth.protocol.invite_token import DeviceToken, encode_device_token

    me = node.identity
    return encode_device_token(
        DeviceToken(
            token=node.create_invite(device=True, for_device=device_key),
            member_secret=me.member_key.secret,
            member_name=me.name,
        )
    )
