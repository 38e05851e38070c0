"""Removals waiting to be written again (docs/security.md R8 with the keys of §2).

An admin's removal that builds on a change which turns out not to count (another device
signed two bundles for one seq, R4, or wrote past its cutoff, R6) does not count either:
Automerge cannot take a change without what it builds on. It is not void, though: its
author's node writes it again (R8: :meth:`~hearth.node.node.Node.write_again` as it takes the
change out, and :func:`write_own_again` at its next pass for what that missed — a
change taken out while judging competing removals anew, or folded into a snapshot), and
then the member is out as the admin meant. Meanwhile the key the admin made without that
member is a key that left out a member the ledger still lists — exactly what a removal
that R7 voids leaves too, where the member is owed the key. Told apart here, so that no
node hands such a key on (:func:`hearth.group.rotation.hand_on`, the epochs a new key carries)
to a member whose removal is only waiting to be written again: what the group sealed
under it stays unreadable to them.

A removal waits to be written again while a change that writes it (``removed`` into the
member's entry, or into one of its device cards) is held in a bundle that counts, the
change itself does not count (built on one that does not), and its author may still
write it: in the group (not removed, not caught signing twice), and an admin — or, for
one of their own devices, its member. That author's node writes it again.
Once it is written again the member is out; should its author be removed first, or their
new removal be voided, the waiting ends and the key is owed after all.
"""

from __future__ import annotations

from hearth.ledger import membership_rules
from hearth.ledger.automerge_doc import change_hash
from hearth.ledger.ledger import LIVE
from hearth.node.node import Node
from hearth.protocol.bundle import decode_changes, open_envelope, parse_envelope

__all__ = ["removals_to_write_again", "write_own_again"]


def removals_to_write_again(
    node: Node, group_id: str, devices: frozenset[bytes]
) -> frozenset[bytes]:
    """Of ``devices`` (listed in the group, left out of some key), those whose removal
    waits to be written again by its author (see the module's docstring) — and, where
    that removal is of the whole member, every device of that member still listed: one
    they added while it waits (a device invite of their own) was left out of no key, yet
    is theirs as much. Reads the held bundles only when ``devices`` is not empty (rare:
    a removal that did not count)."""
    found = _waiting(node, group_id, devices)
    if not found:
        return frozenset()
    cards = membership_rules.cards(node.view(group_id).tables["members"])
    member_of = {c.key: c.member_id for c in cards}
    whole = {member_of[d] for d, (_, all_of_them) in found.items() if all_of_them}
    also = {c.key for c in cards if c.member_id in whole and c.cutoff is None}
    return frozenset(found) | frozenset(also)


def write_own_again(node: Node, group_id: str) -> bool:
    """Write again, under a fresh actor id (as R8 does), the removals this device made
    that wait to be written again, with cutoffs at what this node holds of the removed
    devices now; whether it wrote any. What `hearth sync` and `serve` do before they
    look at the group's keys (:func:`hearth.group.rotation.keep_keys`)."""
    view = node.view(group_id)
    mine = node.identity.device_key.public
    cards = membership_rules.cards(view.tables["members"])
    listed = frozenset(c.key for c in cards if c.cutoff is None)
    left_out = set().union(*node.feeds.excluded(group_id, counted_only=False).values())
    own = {
        device: whole
        for device, (author, whole) in _waiting(node, group_id, listed & left_out).items()
        if author == mine
    }
    if not own:
        return False
    by_key = {c.key: c for c in cards}
    with node.change(group_id) as ledger:
        node._fresh_actor(group_id, ledger)  # as R8 writes again: never clashing
        for member_id in sorted({by_key[d].member_id for d, whole in own.items() if whole}):
            ledger.remove_member(
                member_id,
                {
                    c.key.hex(): node.feeds.head(group_id, c.key)[0]
                    for c in cards
                    if c.member_id == member_id and c.cutoff is None
                },
            )
        for device in sorted(d for d, whole in own.items() if not whole):
            card = by_key[device]
            ledger.remove_device(
                card.member_id, card.device_id, node.feeds.head(group_id, device)[0]
            )
    return True


def _waiting(
    node: Node, group_id: str, devices: frozenset[bytes]
) -> dict[bytes, tuple[bytes, bool]]:
    """Of ``devices``, those whose removal waits to be written again, each with the
    device that wrote it and whether it removed the whole member (not one device)."""
    if not devices:
        return {}
    members = node.view(group_id).tables["members"]
    cards = membership_rules.cards(members)
    member_of = {c.key: c.member_id for c in cards if c.key in devices}
    if not member_of:
        return {}
    orphans = _orphaned(node, group_id)
    if not orphans:
        return {}
    caught = node.feeds.equivocations(group_id)
    writers = {c.key: c.member_id for c in cards if c.cutoff is None and c.key not in caught}
    admins = {
        m for m in set(writers.values()) if membership_rules.effective_role(members, m) == "admin"
    }
    document = node.ledger(group_id).doc
    found: dict[bytes, tuple[bytes, bool]] = {}
    # Ids first: the envelopes of bundles already read are not fetched again.
    for bundle_id, author in node.store.applied_authors(group_id):
        if author not in writers or orphans.isdisjoint(_change_ids(node, bundle_id)):
            continue
        lost = [c for c in _live_changes(node, bundle_id) or [] if change_hash(c).hash in orphans]
        writer = writers[author]
        for device, member_id in member_of.items():
            if device in found or not (writer in admins or writer == member_id):
                continue
            whole = writer in admins and document.writes_fields(
                lost, "members", member_id, ["removed"]
            )
            if whole or document.writes_key_in_entry(lost, "members", member_id, "removed"):
                found[device] = (author, whole)
    return found


def _live_changes(node: Node, bundle_id: bytes) -> list[bytes] | None:
    """The live document's changes a held content bundle carries (none if it is of
    another kind; ``None`` if this node cannot open it)."""
    stored = node.feeds.get(bundle_id)
    if stored is None:
        return None
    envelope = parse_envelope(stored.envelope)
    held = node.feeds.keys_for_topic(envelope.topic)
    if held is None:
        return None
    inner = open_envelope(envelope, held[1])
    if inner.kind != "content":
        return []
    return [c for doc, c, _ in decode_changes(inner.payload) if doc == LIVE]


def _change_ids(node: Node, bundle_id: bytes) -> frozenset[bytes]:
    """The hashes of a held bundle's live changes, remembered by bundle id once read (a
    bundle's inside never changes): a node asks this of every bundle it holds on each
    pass while a removal that did not count leaves a key out of step with who is in."""
    known = _CHANGE_IDS.get(bundle_id)
    if known is None:
        changes = _live_changes(node, bundle_id)
        if changes is None:
            return frozenset()
        known = frozenset(change_hash(c).hash for c in changes)
        if len(_CHANGE_IDS) >= _MAX_REMEMBERED:
            _CHANGE_IDS.pop(next(iter(_CHANGE_IDS)))
        _CHANGE_IDS[bundle_id] = known
    return known


_MAX_REMEMBERED = 200_000  # bundle ids with a few 32-byte hashes each: tens of MB at most
_CHANGE_IDS: dict[bytes, frozenset[bytes]] = {}


def _orphaned(node: Node, group_id: str) -> set[bytes]:
    """The hashes of the group's changes known never to be part of its ledger (the table
    :mod:`hearth.validity.retraction` keeps; read here directly, as that module builds on this
    one's users)."""
    return node.store.orphaned_changes(group_id)
