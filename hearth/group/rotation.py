"""New group keys when someone is out (SECURITY.md §5): making an epoch, and taking one in.

When a member is removed, leaves, or loses a device, every device still in the group must
get a key the departed device does not have. An admin's node makes it: a fresh secret
sealed to each remaining device, published as an epoch op in the admin's feed under the
old epoch (so members who were offline find it where they last read), after which this
node seals everything under the new epoch and syncs its new topic. Any admin node that
sees the current epoch still shared with a departed device does this — after a removal at
once, after someone leaves on its next sync — and rival rotations settle by
:func:`hearth.protocol.epoch_op.preferred`.

A device left out of an epoch by a removal that did not count gets it with the next
rotation; and any member's node that holds such an epoch hands it on once (a hand-on in
its feed), for when no admin holds it to rotate with it (:func:`keep_keys`). Not while
that removal only waits to be written again (R8, :mod:`hearth.group.pending_removals`): for the
keys, the device is out until then — no key is handed on, carried or made for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from hearth.errors import NotFound
from hearth.group import pending_removals
from hearth.ledger import membership_rules
from hearth.ledger.model import Role
from hearth.ledger.view import LedgerView
from hearth.neighbourhood import participation
from hearth.node.node import Node
from hearth.protocol.bundle import EpochKeys, Inner
from hearth.protocol.epoch_op import (
    Carried,
    decode_epoch_op,
    make_epoch_op,
    make_hand_on,
    open_hand_on,
)

__all__ = [
    "admission_key",
    "departed_devices",
    "epoch_of",
    "hand_on",
    "keep_keys",
    "rotate",
    "rotation_due",
    "take_epoch_op",
    "take_hand_on",
]


def departed_devices(view: LedgerView) -> frozenset[bytes]:
    """Keys of every device whose writes no longer count: removed, or of someone gone."""
    return frozenset(
        c.key for c in membership_rules.cards(view.tables["members"]) if c.cutoff is not None
    )


def _out(node: Node, group_id: str, view: LedgerView) -> frozenset[bytes]:
    """Devices no key may be sealed to any more: departed, caught equivocating (R4), or
    left out of a key by a removal that waits to be written again (R8)."""
    out = departed_devices(view) | frozenset(node.feeds.equivocations(group_id))
    listed = {c.key for c in membership_rules.cards(view.tables["members"])} - out
    left_out = set().union(*node.feeds.excluded(group_id, counted_only=False).values())
    return out | pending_removals.removals_to_write_again(
        node, group_id, frozenset(listed & left_out)
    )


def keep_keys(node: Node, group_id: str) -> bool:
    """What `hearth sync` and `hearth serve` do for the group's keys before each pass: a
    removal this device made written again if it waits for that (R8,
    :func:`hearth.group.pending_removals.write_own_again`), a new epoch if one is due
    (:func:`rotation_due`), new keys in its neighbourhoods after one
    (:func:`hearth.neighbourhood.participation.hand_on_keys`), and older epochs handed on to the
    devices left out of them although they are in the group (:func:`hand_on`). Whether there is
    something new to send."""
    written = pending_removals.write_own_again(node, group_id)  # before judging the keys
    rotated = rotation_due(node, group_id)
    if rotated:
        rotate(node, group_id)
    handed = participation.hand_on_keys(node, group_id)  # after the epoch: it keeps the new key
    return hand_on(node, group_id) or rotated or handed or written


def rotation_due(node: Node, group_id: str) -> bool:
    """Whether this node should start a new epoch: its member is an admin and the epoch
    in use may still be held by a departed device, or was not given to a device still in
    the group (a removal that did not count after all, R7, or a device that joined while
    the epoch was made)."""
    view = node.view(group_id)
    try:
        me = view.member(node.identity.member_id)
    except NotFound:
        return False
    if me.role is not Role.ADMIN or me.status != "active":
        return False
    departed = _out(node, group_id, view)
    if node.identity.device_key.public in departed:
        return False  # this device is out itself: its op would count nowhere
    _, keys, excluded = node.feeds.current(group_id)
    listed = {c.key for c in membership_rules.cards(view.tables["members"]) if c.cutoff is None}
    return not departed <= excluded or bool(_lacking(node, group_id, keys, listed - departed))


def rotate(node: Node, group_id: str) -> EpochKeys:
    """Start a new epoch for the group, sealed to every device still in it."""
    gid = bytes.fromhex(group_id)
    with node.store.write():
        view = node.view(group_id)
        number = max(n for n, _ in node.feeds.epochs(group_id))
        _, old, _ = node.feeds.current(group_id)
        cards = membership_rules.cards(view.tables["members"])
        out = _out(node, group_id, view)
        secret = node.random_bytes(32)
        staying = [c for c in cards if c.key not in out]
        op = make_epoch_op(
            number=number + 1,
            secret=secret,
            recipients={c.key: c.kem for c in staying},
            excluded=out,
            random_bytes=node.random_bytes,
            # A device left out of epochs by a removal that did not count after all gets
            # them now, or it could not read what was sealed under them meanwhile.
            carried={c.kem: node.feeds.left_out_of(group_id, c.key) for c in staying},
        )
        keys = EpochKeys(
            group_id=gid, epoch_id=op.epoch_id(gid, node.identity.device_key.public), secret=secret
        )
        node.feeds.seal_epoch_op(
            group_id,
            op.encode(),
            _readable_by(node, group_id, {c.key for c in staying}, old),
            node.ledger(group_id).doc.heads(),
        )
        node.feeds.add_epoch(group_id, keys, op.number, op.excluded, given=op.given)
    return keys


def _readable_by(node: Node, group_id: str, devices: set[bytes], current: EpochKeys) -> EpochKeys:
    """The epoch to seal a new epoch's op under: the one in use, unless it was not given to
    some of ``devices`` (a removal that did not count after all, or they joined while it
    was made) — then the newest one all of them were given."""
    if not _lacking(node, group_id, current, devices):
        return current
    excluded = node.feeds.excluded(group_id)
    held = [k for _, k in node.feeds.epochs(group_id) if k.epoch_id in excluded]
    return next((k for k in reversed(held) if not _lacking(node, group_id, k, devices)), current)


def _lacking(node: Node, group_id: str, keys: EpochKeys, devices: set[bytes]) -> set[bytes]:
    """Which of ``devices`` may not hold an epoch (one this node holds): those its op left
    out, and those it was not sealed to (they joined while it was made) unless they have
    sealed a bundle under it (it came with their invite)."""
    lacking = set(node.feeds.excluded(group_id).get(keys.epoch_id, frozenset()) & devices)
    given = node.feeds.given(group_id, keys.epoch_id)
    if given is not None:
        lacking |= {
            d for d in devices - given if not node.feeds.wrote_under(group_id, d, keys.topic)
        }
    return lacking


def hand_on(node: Node, group_id: str) -> bool:
    """Hand on to each device in the group the epochs this node holds that left it out
    (a removal that did not count) or whose ops do not count and were not given to it,
    once per device and epoch; whether it did."""
    view = node.view(group_id)
    out = _out(node, group_id, view)
    mine = node.identity.device_key.public
    if mine in out or membership_rules.cutoff_of(view.tables["members"], mine) is not None:
        return False
    done = _handed(node, group_id)
    counted = node.feeds.excluded(group_id)  # the epochs whose ops count
    handed: dict[bytes, list[Carried]] = {}
    recipients: set[bytes] = set()
    for card in membership_rules.cards(view.tables["members"]):
        if card.key == mine or card.key in out or card.cutoff is not None:
            continue
        # Also an epoch whose op does not count that the device was not given (it joined
        # later): members who had not heard it did not count sealed under it meanwhile.
        # And one made after the newest its invite gave it (it joined while keys changed,
        # and no admin is left to start a key for everyone).
        had = _newest_sealed_under(node, group_id, card.key)
        epochs = [
            c
            for c in node.feeds.left_out_of(group_id, card.key)
            if (card.key in c.excluded or c.epoch_id not in counted or c.number > had)
            and (card.key.hex(), c.epoch_id.hex()) not in done
        ]
        if epochs:
            handed[card.kem] = epochs
            recipients.add(card.key)
            done |= {(card.key.hex(), c.epoch_id.hex()) for c in epochs}
    if not handed:
        return False
    with node.store.write():
        # Sealed under a key every recipient holds, or the one it hands on could not be read.
        keys = _readable_by(node, group_id, recipients, node.feeds.current_keys(group_id))
        node.feeds.seal_hand_on(group_id, make_hand_on(handed, node.random_bytes), keys)
        node.store.set_meta(f"handed_on:{group_id}", json.dumps(sorted(done)))
    return True


def _newest_sealed_under(node: Node, group_id: str, device: bytes) -> int:
    """The number of the newest epoch a device has sealed a bundle under (-1: none): it
    holds that one and, from its invite, every one before."""
    numbers = [
        n
        for n, k in node.feeds.epochs(group_id)
        if node.feeds.wrote_under(group_id, device, k.topic)
    ]
    return max(numbers, default=-1)


def _handed(node: Node, group_id: str) -> set[tuple[str, str]]:
    """(device, epoch) pairs this node has handed on, as hex."""
    raw = node.store.get_meta(f"handed_on:{group_id}")
    return {(d, e) for d, e in json.loads(raw)} if raw else set()


def take_hand_on(node: Node, group_id: str, inner: Inner) -> None:
    """Keep the epochs a hand-on carries to this device, to open with until their own ops
    are judged (inside a write)."""
    _keep_carried(node, group_id, open_hand_on(inner.payload, node.identity.kem_key))


def take_epoch_op(node: Node, group_id: str, inner: Inner, *, eligible: bool | None = True) -> None:
    """Keep the secret of an epoch op another admin published, if one wrap is for us
    (inside a write). An op that does not count (``eligible`` false: its author was out,
    or no admin) still gives a key that opens what others sealed under it before they knew,
    so that every node can read the same bundles; nothing new is sealed with it (nor under
    one not judged yet: ``None``). Older epochs the op hands on to this device are kept
    to open with until their own ops are judged."""
    op = decode_epoch_op(inner.payload)
    gid = bytes.fromhex(group_id)
    epoch_id = op.epoch_id(gid, inner.author)
    opened = op.open_for(node.identity.kem_key)
    if opened is None:
        # Not for this device: it is out, or joined after and got the key with its invite
        # — without what the op says of it (who is left out, whether it counts), which
        # every node needs to pick the same epoch to seal under.
        held = next((k for _, k in node.feeds.epochs(group_id) if k.epoch_id == epoch_id), None)
        if held is not None:
            node.feeds.add_epoch(
                group_id, held, op.number, op.excluded, eligible=eligible, given=op.given
            )
        return
    secret, carried = opened
    keys = EpochKeys(group_id=gid, epoch_id=epoch_id, secret=secret)
    node.feeds.add_epoch(group_id, keys, op.number, op.excluded, eligible=eligible, given=op.given)
    _keep_carried(node, group_id, carried)


def _keep_carried(node: Node, group_id: str, carried: Iterable[Carried]) -> None:
    gid = bytes.fromhex(group_id)
    for old in carried:
        # Whether it counts is judged when its own op is read (it can be, now).
        node.feeds.add_epoch(
            group_id,
            EpochKeys(group_id=gid, epoch_id=old.epoch_id, secret=old.secret),
            old.number,
            old.excluded,
            eligible=None,
        )


def epoch_of(group_id: str, inner: Inner) -> bytes:
    """The id of the epoch an epoch-op bundle creates."""
    return decode_epoch_op(inner.payload).epoch_id(bytes.fromhex(group_id), inner.author)


def admission_key(node: Node, group_id: str) -> str:
    """The key relays admit the group's bundles by, in hex (public; it says nothing about
    members): what the operator of a relay with ``admission = "allow-list"`` asks for
    (``hearth relay key``). It changes with the group's key, when someone is out."""
    return node.feeds.current_keys(group_id).relay_key.public.hex()
