"""Taking back what turned out not to count (SECURITY.md R4, R6, R8).

A removal can arrive after bundles it makes invalid were applied, and a device can be
caught signing two bundles for one place in its feed. Either way the node marks those
bundles invalid, rebuilds the ledger without their changes and whatever was built on them
(:meth:`~hearth.node.Node.rebuild_without`), records those changes as *orphaned* so that
nothing waits for them, and tells the member what happened (:func:`removal_notices`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hearth import membership
from hearth.feeds import INVALID
from hearth.invite import decode_claim
from hearth.ledger.automerge_doc import change_hash
from hearth.node import Node
from hearth.protocol.bundle import Envelope, Inner, decode_changes, open_envelope, parse_envelope
from hearth.rotation import epoch_of, take_epoch_op

__all__ = [
    "NOTICE_DAYS",
    "BrokenDevice",
    "admin_alerts",
    "change_ids",
    "equivocated",
    "is_orphaned",
    "not_counted",
    "orphan",
    "removal_notices",
    "take_out",
    "unorphan",
]

log = logging.getLogger(__name__)

NOTICE_DAYS = 30


def take_out(node: Node, group_id: str, device: bytes, cutoff: int, *, told: bool = True) -> None:
    """A device's bundles past ``cutoff`` turned out not to count: mark them invalid and
    rebuild the ledger without their changes (and whatever was built on them), on every
    node alike; the member is told unless ``told`` is false (judging everything again)."""
    with node.store.write():
        dropped: set[bytes] = set()
        tainted: set[tuple[str, str]] = set()
        invites = dict(node.view(group_id).tables["invites"])
        for stored in node.feeds.invalidate_after(group_id, device, cutoff):
            found = node.feeds.keys_for_topic(parse_envelope(stored.envelope).topic)
            if found is None:
                continue
            inner = open_envelope(parse_envelope(stored.envelope), found[1])
            if inner.kind == "epoch":
                node.feeds.make_ineligible(group_id, epoch_of(group_id, inner))
            if inner.kind == "content":
                for _, change, refs in decode_changes(inner.payload):
                    dropped.add(change_hash(change).hash)
                    tainted.update(refs)
        gone, written = node.rebuild_without(group_id, dropped, tainted, write_again=told)
        orphan(node, group_id, dropped | gone)
        for joined in _joined_by_lost_invites(node, group_id, invites):
            take_out(node, group_id, joined, 0, told=told)
        if not told:
            return
        note = (
            f"{len(dropped)} changes by a removed device after its removal were taken back "
            f"out, with {len(gone - dropped)} built on them"
        )
        if written:
            note += f"; {written} of your entries were written again"
        _notice(node, "removal", note)
    log.warning("%s", note)


def _joined_by_lost_invites(
    node: Node, group_id: str, invites: dict[str, dict[str, object]]
) -> list[bytes]:
    """Devices that joined with an invite the ledger no longer has (of ``invites``, the
    table before a take-out): the invite was written by a removed admin after their
    cutoff. A joining device's changes do not build on its invite (it never saw it), so
    they are not taken out with it; they must be, as on a node that heard of the removal
    first and so never let the claim in (R8, R12)."""
    now = node.view(group_id).tables["invites"]
    # Whether an invite was claimed cannot be read off the table: the claim's mark is the
    # joining device's own entry, in conflict with the admin's (either may show), and it
    # stays when the admin's goes.
    lost = {i for i, entry in invites.items() if entry.get("key") and not now.get(i, {}).get("key")}
    if not lost:
        return []
    found = []
    for card in membership.cards(node.view(group_id).tables["members"]):
        first = node.feeds.at(group_id, card.key, 1)
        if first is None or first.state == INVALID:
            continue
        keys = node.feeds.keys_for_topic(parse_envelope(first.envelope).topic)
        if keys is None:
            continue
        inner = open_envelope(parse_envelope(first.envelope), keys[1])
        if inner.claim and decode_claim(inner.claim).invite_id in lost:
            found.append(card.key)
    return found


def equivocated(
    node: Node, group_id: str, inner: Inner, envelope: Envelope, held: Envelope, name: str
) -> None:
    """R4: ``envelope`` and the ``held`` one are two bundles the device signed for one
    seq. Keep both (and pass them on, so every node that holds either judges alike), and
    treat the device as removed from the seq before."""
    with node.store.write():
        known = node.feeds.equivocations(group_id)
        node.feeds.keep_equivocation(group_id, envelope, inner)
        node.feeds.keep_equivocation(group_id, held, inner)
        if inner.author in known and known[inner.author] <= inner.seq - 1:
            return  # judged already
        _notice(
            node,
            "equivocation",
            f"a device of {name} signed two different versions of the same change (a "
            "broken or copied device); nothing it wrote from there on counts. An admin "
            "should remove the device.",
        )
    take_out(node, group_id, inner.author, inner.seq - 1)


@dataclass(frozen=True, slots=True)
class BrokenDevice:
    """A device caught signing two versions of one place in its feed (R4) that the ledger
    still lists: nothing it writes counts any more, and an admin should remove it."""

    device_id: str
    member_name: str


def admin_alerts(node: Node, group_id: str) -> list[BrokenDevice]:
    """What this node's member must act on as an admin (none for anyone else): devices
    caught equivocating that no admin has removed yet. Derived from what the node holds,
    so an alert goes away on every admin's node once one of them removes the device."""
    members = node.view(group_id).tables["members"]
    me = members.get(node.identity.member_id, {})
    if membership.is_gone(me) or (
        membership.effective_role(members, node.identity.member_id) != "admin"
    ):
        return []
    caught = node.feeds.equivocations(group_id)
    view = node.view(group_id)
    return [
        BrokenDevice(device_id=card.device_id, member_name=view.member_name(card.member_id))
        for card in membership.cards(members)
        if card.key in caught and card.cutoff is None
    ]


def removal_notices(node: Node) -> list[tuple[int, str]]:
    """(when, what) of changes taken back out after late removals or a device's
    equivocation, newest first: what a member is told when some of the ledger, maybe their
    own edits, did not count."""
    since = node.clock.now_ms() - NOTICE_DAYS * 86_400_000
    rows = node.store.query(
        "SELECT at, reason FROM rejections WHERE source IN ('removal', 'equivocation') "
        "AND at >= ? ORDER BY at DESC",
        (since,),
    )
    return [(int(at), str(reason)) for at, reason in rows]


def _notice(node: Node, kind: str, text: str) -> None:
    node.store.run(
        "INSERT INTO rejections(at, source, reason) VALUES (?, ?, ?)",
        (node.clock.now_ms(), kind, text),
    )


def not_counted(node: Node, group_id: str, inner: Inner) -> None:
    """Record what a bundle that does not count means for others (inside a write)."""
    orphan(node, group_id, change_ids(inner))
    if inner.kind == "epoch":
        take_epoch_op(node, group_id, inner, eligible=False)


def change_ids(inner: Inner) -> set[bytes]:
    """The hashes of the Automerge changes a content bundle carries."""
    if inner.kind != "content":
        return set()
    return {change_hash(c).hash for _, c, _ in decode_changes(inner.payload)}


def is_orphaned(node: Node, group_id: str, change: bytes) -> bool:
    """Whether a change is known never to be part of the ledger."""
    return bool(
        node.store.query(
            "SELECT 1 FROM orphaned_changes WHERE group_id = ? AND hash = ?", (group_id, change)
        )
    )


def unorphan(node: Node, group_id: str, changes: set[bytes]) -> None:
    """Changes that may be part of the ledger after all (inside a write)."""
    for change in changes:
        node.store.run(
            "DELETE FROM orphaned_changes WHERE group_id = ? AND hash = ?", (group_id, change)
        )


def orphan(node: Node, group_id: str, changes: set[bytes]) -> None:
    """Record changes that will never be part of the ledger (inside a write)."""
    for change in changes:
        node.store.run(
            "INSERT OR IGNORE INTO orphaned_changes(group_id, hash) VALUES (?, ?)",
            (group_id, change),
        )
