"""Taking back what turned out not to count (SECURITY.md R4, R6, R8).

A removal can arrive after bundles it makes invalid were applied, and a device can be
caught signing two bundles for one place in its feed. Either way the node marks those
bundles invalid, rebuilds the ledger without their changes and whatever was built on them
(:meth:`~hearth.node.node.Node.rebuild_without`), records those changes as *orphaned* so that
nothing waits for them, and tells the member what happened (:func:`removal_notices`).
"""

from __future__ import annotations

import logging

from hearth.errors import ProtocolError
from hearth.group.rotation import epoch_of, take_epoch_op
from hearth.ledger import membership_rules
from hearth.ledger.automerge_doc import EntryRef, change_hash
from hearth.node.feeds import APPLIED, WAITING, StoredBundle
from hearth.node.node import Node
from hearth.protocol.bundle import Envelope, Inner, decode_changes, open_envelope, parse_envelope
from hearth.protocol.invite_token import decode_claim
from hearth.values import counted

__all__ = [
    "NOTICE_DAYS",
    "change_ids",
    "equivocated",
    "is_orphaned",
    "not_counted",
    "notice",
    "opened",
    "orphan",
    "removal_notices",
    "second_bundles",
    "take_out",
    "unorphan",
]

log = logging.getLogger(__name__)

NOTICE_DAYS = 30


_LATE_REMOVAL = "a removed device after its removal"


def take_out(
    node: Node,
    group_id: str,
    device: bytes,
    cutoff: int,
    *,
    told: bool = True,
    by: str = _LATE_REMOVAL,
) -> None:
    """A device's bundles past ``cutoff`` turned out not to count: mark them invalid and
    rebuild the ledger without their changes (and whatever was built on them), on every
    node alike; the member is told unless ``told`` is false (judging everything again),
    in words that say whose changes they were and why (``by``)."""
    with node.store.write():
        before = node.ledger(group_id).doc
        mine = node.own_changes(group_id)  # the rebuild folds them into a snapshot
        invites = dict(node.view(group_id).tables["invites"])
        dropped: set[bytes] = set()
        tainted: set[tuple[str, str]] = set()
        for stored in node.feeds.invalidate_after(group_id, device, cutoff):
            inner = opened(node, stored)
            if inner is not None and inner.kind == "epoch":
                node.feeds.make_ineligible(group_id, epoch_of(group_id, inner))
            if inner is not None and inner.kind == "content":
                for _, change, refs in decode_changes(inner.payload):
                    dropped.add(change_hash(change).hash)
                    tainted.update(refs)
        gone = node.rebuild_without(group_id, dropped)
        orphan(node, group_id, dropped | gone)
        gone |= _hold_back_claims_to_lost_invites(node, group_id, invites, tainted)
        if not told:
            return
        again = {ref for h in gone if h in mine for ref in mine[h]} - tainted
        written = node.write_again(group_id, again, before)
        was = "was" if len(dropped) == 1 else "were"
        if by != _LATE_REMOVAL:
            whose = f"by {by}"
        elif device == node.identity.device_key.public:
            whose = "you made after you were removed"
        else:
            whose = "made on a device after it was removed"
        note = f"{counted(len(dropped), 'change')} {whose} did not count and {was} taken back out"
        built = len(gone - dropped)
        if built:
            on = "it" if len(dropped) == 1 else "them"
            note += f", with {counted(built, 'change')} built on {on}"
        if written:
            note += f"; {written} of your entries were written again"
        notice(node, "removal", note)
    log.info("%s", note)  # the member reads it in `hearth status`, in words


def opened(node: Node, stored: StoredBundle) -> Inner | None:
    """A held bundle's inside (``None`` if this node has no key for it). Judging a group
    again opens the same bundles many times; an envelope's inside never changes, so the
    last few opened are kept."""
    inner = _OPENED.get(stored.id)
    if inner is not None:
        return inner
    envelope = parse_envelope(stored.envelope)
    found = node.feeds.keys_for_topic(envelope.topic)
    if found is None:
        return None
    try:
        inner = open_envelope(envelope, found[1])
    except ProtocolError:
        return None  # a copy sealed otherwise (kept by a Hearth that took those): it never counts
    if len(inner.payload) <= _MAX_KEPT_PAYLOAD:
        if len(_OPENED) >= _MAX_OPENED:
            _OPENED.pop(next(iter(_OPENED)))
        _OPENED[stored.id] = inner
    return inner


_MAX_OPENED = 1024
_MAX_KEPT_PAYLOAD = 16 * 1024  # not snapshots: what is kept stays small
_OPENED: dict[bytes, Inner] = {}


def _hold_back_claims_to_lost_invites(
    node: Node, group_id: str, invites: dict[str, dict[str, object]], tainted: set[EntryRef]
) -> set[bytes]:
    """Put back to waiting the bundles of devices that joined with an invite the ledger no
    longer has (of ``invites``, the table before a take-out) — as on a node that never saw
    the invite — and rebuild without their changes; returns the hashes that went, and adds
    the entries they touched to ``tainted``.

    The invite was written by a removed admin after their cutoff, or built on a change
    that did not count. A joining device's changes do not build on its invite (it never
    saw it), so they are not taken out with it. If an admin writes the invite again (R8),
    the claims count again once that arrives; the admin's node writes it again only after
    this, so that what it writes does not build on the claims (which would leave every
    other node unable to take in either)."""
    now = node.view(group_id).tables["invites"]
    # Whether an invite was claimed cannot be read off the table: the claim's mark is the
    # joining device's own entry, in conflict with the admin's (either may show), and it
    # stays when the admin's goes.
    lost = {i for i, entry in invites.items() if _lost(entry, now.get(i, {}))}
    held: set[bytes] = set()
    for card in membership_rules.cards(node.view(group_id).tables["members"]):
        first = node.feeds.at(group_id, card.key, 1)
        if card.key == node.identity.device_key.public or first is None or first.state != APPLIED:
            continue
        inner = opened(node, first)
        if inner is None or not inner.claim or decode_claim(inner.claim).invite_id not in lost:
            continue
        for stored in node.feeds.all(group_id):
            if stored.author == card.key and stored.state == APPLIED:
                node.feeds.set_state(stored.id, WAITING)
                content = opened(node, stored)
                if content is not None and content.kind == "content":
                    for _, change, refs in decode_changes(content.payload):
                        held.add(change_hash(change).hash)
                        tainted.update(refs)
    return node.rebuild_without(group_id, held) if held else set()


def _lost(before: dict[str, object], after: dict[str, object]) -> bool:
    """Whether a take-out lost an invite, or the confirmation its claim counts by (R14):
    a confirmation built on a change that did not count goes with it, and the inviting
    node confirms again, on top of a ledger without the claim."""
    if before.get("key") and not after.get("key"):
        return True
    return isinstance(before.get("confirmed"), str) and not isinstance(after.get("confirmed"), str)


def equivocated(
    node: Node, group_id: str, inner: Inner, envelope: Envelope, held: Envelope, name: str
) -> bool:
    """R4: ``envelope`` and the ``held`` one are two bundles the device signed for one
    seq. Keep both (and pass them on, so every node that holds either judges alike), and
    treat the device as removed from the seq before. Whether that took anything out (not
    if an earlier proof cut the device off there or before already)."""
    with node.store.write():
        known = node.feeds.equivocations(group_id)
        node.feeds.keep_equivocation(group_id, envelope, inner)
        node.feeds.keep_equivocation(group_id, held, inner)
        # Kept as a proof, not as a bundle of the feed, so the take-out below does not
        # see it: its changes never count either, and what builds on them must not wait
        # for them (the held one's go with the take-out, or went with an earlier one).
        orphan(node, group_id, change_ids(inner))
        if inner.author in known and known[inner.author] <= inner.seq - 1:
            return False  # judged already
        notice(
            node,
            "equivocation",
            f"a device of {name} signed two different versions of the same change (a "
            "broken or copied device); nothing it wrote from there on counts. An admin "
            "should remove the device.",
        )
    take_out(node, group_id, inner.author, inner.seq - 1, by=_signed_twice(name))
    return True


def _signed_twice(name: str) -> str:
    """Whose changes an equivocation took out, as the sync log and ``status`` say it."""
    return (
        f"a device of {name} that signed two versions of one change (a copied or restored "
        "device), from that change on,"
    )


def removal_notices(node: Node, *, since_ms: int | None = None) -> list[tuple[int, str]]:
    """(when, what) of changes taken back out after late removals or a device's
    equivocation, newest first (of the last month, or since ``since_ms``): what a member
    is told when some of the ledger, maybe their own edits, did not count."""
    since = node.clock.now_ms() - NOTICE_DAYS * 86_400_000 if since_ms is None else since_ms
    return node.store.retraction_notices(since)


def notice(node: Node, kind: str, text: str) -> None:
    """Keep a note for the member (and, by ``kind``, the admins) of something that did
    not count (inside a write)."""
    node.store.keep_notice(node.clock.now_ms(), kind, text)


def not_counted(node: Node, group_id: str, inner: Inner) -> None:
    """Record what a bundle that does not count means for others (inside a write)."""
    orphan(node, group_id, change_ids(inner))
    if inner.kind == "epoch":
        take_epoch_op(node, group_id, inner, eligible=False)


def second_bundles(node: Node, group_id: str) -> list[Inner]:
    """The insides of the bundles kept only as proofs that their authors signed two for
    one seq (R4): none of their changes counts."""
    found = []
    for _, keys in node.feeds.epochs(group_id):
        for _, data in node.feeds.proofs(keys.topic):
            try:
                found.append(open_envelope(parse_envelope(data), keys))
            except ProtocolError:
                continue  # a copy sealed otherwise, kept as a proof before those were refused
    return found


def change_ids(inner: Inner) -> set[bytes]:
    """The hashes of the Automerge changes a content bundle carries."""
    if inner.kind != "content":
        return set()
    return {change_hash(c).hash for _, c, _ in decode_changes(inner.payload)}


def is_orphaned(node: Node, group_id: str, change: bytes) -> bool:
    """Whether a change is known never to be part of the ledger."""
    return node.store.is_orphaned(group_id, change)


def unorphan(node: Node, group_id: str, changes: set[bytes]) -> None:
    """Changes that may be part of the ledger after all (inside a write)."""
    node.store.unorphan_changes(group_id, changes)


def orphan(node: Node, group_id: str, changes: set[bytes]) -> None:
    """Record changes that will never be part of the ledger (inside a write)."""
    node.store.orphan_changes(group_id, changes)
