"""Joining counts once the inviting device confirms it (docs/security.md, R14).

A join token or code is single use: one device, ever, on every node. A claim to an invite
(the joiner's first bundle, signed with the invite's key) does not count by itself — two
devices holding one token would both claim it, and nodes that heard of them in different
orders would list different members. Instead the device that made the invite confirms one
claim, in its own feed: for an invite code at once (the exchange tells it the joiner's
device key), for a printed token when the first claim reaches it. Every node counts the
claim of the device confirmed and no other; a device's feed is one chain, so there is
never a rival confirmation to settle, and nothing any writer chooses decides between two
claims. A token whose maker was removed before confirming it, or that was confirmed for
someone since removed, lets nobody in again.

What a claim that does not count means is said plainly to the one who made it
(:func:`claim_standing`) and to the group's admins (:mod:`hearth.validity.alerts`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from hearth.crypto import key_id
from hearth.errors import HearthError, ProtocolError
from hearth.ledger import membership_rules
from hearth.node.feeds import WAITING
from hearth.node.node import Node
from hearth.protocol.invite_token import decode_claim
from hearth.validity.retraction import opened

__all__ = [
    "CLAIM_AS_MEMBER",
    "claim_standing",
    "confirm_claims",
    "confirmed_device",
    "needs_confirming",
]

log = logging.getLogger(__name__)

CLAIM_AS_MEMBER = "a claim to a new member's invite naming a member already in the group"
"""Why such a claim never counts: signed by the invite's key alone, the member key it
names is the claimant's word — naming an admin's (public) key, it would join as her."""


def needs_confirming(invite: Mapping[str, object]) -> bool:
    """Whether an invite counts a claim only once its maker confirmed it (every invite
    made since R14; older ones went by the first claim a node heard of)."""
    return isinstance(invite.get("by_device"), str)


def confirmed_device(invite: Mapping[str, object]) -> bytes | None:
    """The device an invite was confirmed for, if it was."""
    value = invite.get("confirmed")
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def confirm_claims(node: Node, group_id: str) -> int:
    """Confirm, for each invite this device made and nobody has used yet, the first claim
    to it held here (waiting for just that); return how many were confirmed.

    The maker decides only whether to confirm: that the claim came in time (the invite's
    expiry, by this device's clock) and, for a new member, that this member may still
    let people in. Validity on every node then follows the confirmation alone (R10)."""
    mine = node.identity.device_key.public.hex()
    view = node.view(group_id)
    invites = view.tables["invites"]
    if not any(i.get("by_device") == mine and "confirmed" not in i for i in invites.values()):
        return 0
    members = view.tables["members"]
    if membership_rules.cutoff_of(members, node.identity.device_key.public) is not None:
        return 0  # out of the group: a confirmation would count nowhere
    now = node.clock.now_ms()
    chosen: dict[str, bytes] = {}
    for stored in node.feeds.waiting(group_id):
        if stored.seq != 1 or stored.state != WAITING:
            continue
        inner = opened(node, stored)
        if inner is None or not inner.claim:
            continue
        try:
            claim = decode_claim(inner.claim)
        except HearthError:
            continue
        invite = invites.get(claim.invite_id, {})
        if (
            claim.invite_id in chosen
            or invite.get("by_device") != mine
            or "confirmed" in invite
            or claim.device_key != inner.author
            or not claim.verifies(bytes.fromhex(str(invite.get("key", ""))))
        ):
            continue
        expires = invite.get("expires_at")
        if not isinstance(expires, int) or now > expires:
            continue
        if invite.get("kind") == "device":
            if invite.get("member") != key_id(claim.member_key):
                continue
        elif membership_rules.effective_role(members, node.identity.member_id) != "admin":
            continue
        chosen[claim.invite_id] = inner.author
    if chosen:
        with node.change(group_id) as ledger:
            for invite_id, device in sorted(chosen.items()):
                ledger.confirm_invite(invite_id, device.hex())
        log.info("confirmed %d join(s) to invites made on this device", len(chosen))
    return len(chosen)


def claim_standing(node: Node, group_id: str) -> str:
    """How this device's own join stands, in words for its member, or ``""`` if it is
    in (or joined some other way)."""
    view = node.view(group_id)
    me = view.tables["members"].get(node.identity.member_id, {})
    invite_id = me.get("invite")
    if not isinstance(invite_id, str):
        return ""
    invite = view.tables["invites"].get(invite_id, {})
    try:
        membership_rules.check_joined_at(me, invite)
    except ProtocolError:
        return (
            "Your join is dated before the invite you used was made (is this device's clock "
            "set back?), so it does not count on the other members' devices. Set the clock "
            "right and ask a member for a new invite."
        )
    if not needs_confirming(invite):
        return ""
    confirmed = confirmed_device(invite)
    if confirmed is None:
        return (
            "Your join waits for the member who invited you to confirm it: it happens on "
            "its own the next time their device syncs."
        )
    if confirmed != node.identity.device_key.public:
        return (
            "The invite you joined with was used by another device first, so what you "
            "write here does not reach the group. Ask a member for a new invite."
        )
    return ""
