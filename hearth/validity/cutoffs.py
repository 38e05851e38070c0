"""Where a device's writes stop counting (docs/security.md: R4, R6, R7).

A removed device's bundles past the cutoff its removal records do not count, and neither
do those of a device caught signing two bundles for one seq, past the seq before (R4).

One exception, R7 settled by seniority: two admins who remove (or demote) each other at
the same moment, each not knowing of the other's op. The one who has been an admin longer
(:func:`hearth.ledger.membership_rules.seniority`) stands: the junior's removal of the senior is
void, so everything the senior wrote after the cutoff the junior gave them counts — the op
against the junior among it. The senior's feed past that cutoff is read as a checked chain
(each bundle following the one before) up to the op that removes or demotes the junior,
judged by what the senior could see then: if the senior had heard of their own removal,
or the junior was out already, it is no answer. Anything else written past a cutoff stays
out, and a junior's counter-removal never counts — from a copy of a node made before its
removal or otherwise. Telling needs the changes the answer builds on.
"""

from __future__ import annotations

from collections.abc import Mapping

from hearth.ledger import Ledger, membership_rules
from hearth.ledger.automerge_doc import change_hash
from hearth.ledger.ledger import LIVE
from hearth.node.feeds import StoredBundle
from hearth.node.node import Node
from hearth.protocol.bundle import Inner, decode_changes
from hearth.validity.retraction import is_orphaned, opened

__all__ = ["counted_through", "cutoff", "past_cutoff", "removal_voided", "within_cutoff"]

_MAX_ANSWER = 64  # bundles past a cutoff read to find the answer: a node offline for a while


def cutoff(node: Node, group_id: str, members: membership_rules.Table, device: bytes) -> int | None:
    """The last seq of a device's feed that counts by its removal or departure, or by the
    seq before the one it signed twice, whichever is earlier (``None``: all of it counts)."""
    listed = membership_rules.cutoff_of(members, device)
    proved = node.feeds.equivocations(group_id).get(device)
    if proved is None:
        return listed
    return proved if listed is None else min(listed, proved)


def _remover_if_senior(
    node: Node, group_id: str, members: membership_rules.Table, device: bytes
) -> str:
    """The member who removed ``device``'s member, if that member is senior to them, so
    that the device may have answered the removal (R7); ``""`` otherwise."""
    card = membership_rules.card_of(members, device)
    if card is None or card.cutoff is None:
        return ""
    proved = node.feeds.equivocations(group_id).get(device)
    if proved is not None and proved <= card.cutoff:
        return ""  # cut off for signing twice: no seniority undoes that
    removal = members.get(card.member_id, {}).get("removed")
    remover = removal.get("created_by") if isinstance(removal, Mapping) else None
    if not isinstance(remover, str) or remover == card.member_id or remover not in members:
        return ""
    if membership_rules.seniority(members, card.member_id) > membership_rules.seniority(
        members, remover
    ):
        return ""
    return remover


def removal_voided(
    node: Node,
    group_id: str,
    ledger: Ledger,
    device: bytes,
    *,
    pending: tuple[Inner, bytes] | None = None,
) -> bool | None:
    """Whether the removal of ``device``'s member is void under R7: the member is senior
    to the one who removed them and, not knowing of it, removed or demoted that admin in
    a bundle past the cutoff (``pending``: one being judged, with its id, perhaps not held
    yet). ``None`` while
    that cannot be told (the changes it builds on have not all arrived). ``ledger``: the
    group's, as it is now (inside a write, the one being written)."""
    members = ledger.view.tables["members"]
    remover = _remover_if_senior(node, group_id, members, device)
    if not remover:
        return False
    last = membership_rules.cutoff_of(members, device)
    assert last is not None
    # Nothing past a seq the device signed twice counts (R4), an answer neither.
    end = min(last + _MAX_ANSWER, node.feeds.equivocations(group_id).get(device, 2**62))
    document = ledger.doc
    target = document.objects_under_entry("members", remover)
    chain: list[bytes] = []  # the LIVE changes of the chain so far
    prev = _id_at(node, group_id, device, last)
    for seq in range(last + 1, end + 1):
        if pending is not None and pending[0].seq == seq:
            inner: Inner | None = pending[0]
            bundle_id = pending[1]
        else:
            held = node.feeds.at(group_id, device, seq)
            inner = opened(node, held) if held is not None else None
            bundle_id = held.id if held is not None else b""
        if inner is None or inner.prev != prev:
            return False  # the chain ends (or breaks) before any answer
        own = (
            [c for name, c, _ in decode_changes(inner.payload) if name == LIVE]
            if inner.kind == "content"
            else []
        )
        if own and document.may_write(own, target):
            answered = _answers(node, group_id, ledger, chain, own, device, remover)
            if answered is not False:
                return answered
        chain += own
        prev = bundle_id
    return False


def _id_at(node: Node, group_id: str, device: bytes, seq: int) -> bytes:
    """The id of a device's bundle at ``seq``: held, or the head a snapshot covered."""
    if seq == 0:
        return b""
    held = node.feeds.at(group_id, device, seq)
    if held is not None:
        return held.id
    covered = node.feeds.head(group_id, device)
    return covered[1] if covered[0] == seq else b""


def _answers(
    node: Node,
    group_id: str,
    ledger: Ledger,
    before: list[bytes],
    own: list[bytes],
    device: bytes,
    remover: str,
) -> bool | None:
    """Whether ``own`` (after ``before``, the same feed's changes past its cutoff) removes
    or demotes ``remover`` as its author saw things, unaware of its own removal."""
    document = ledger.doc
    written = before + own
    hashes = {change_hash(c).hash for c in written}
    deps = sorted({d for c in written for d in change_hash(c).deps} - hashes)
    missing = [d for d in deps if not document.knows(d)]
    if any(is_orphaned(node, group_id, d) for d in missing):
        return False  # built on something that does not count (R8)
    if missing:
        return None
    member_id = next(
        c.member_id
        for c in membership_rules.cards(ledger.view.tables["members"])
        if c.key == device
    )
    then = document.as_of(deps)
    then.apply(before)
    seen = then.read_table("members")
    if any(membership_rules.is_gone(seen.get(m, {})) for m in (member_id, remover)):
        return False  # it knew it was out, or its target was out already
    if seen.get(remover, {}).get("role") != "admin":
        return False
    then.apply(own)
    after = then.read_table("members").get(remover, {})
    return "removed" in after or after.get("role") != "admin"


def within_cutoff(
    node: Node, group_id: str, ledger: Ledger, inner: Inner, bundle_id: bytes
) -> bool | None:
    """Whether a bundle (``inner``, its id ``bundle_id``) counts for where it sits in its
    author's feed: at or before the cutoff, or past a removal that R7 voids; ``None``
    while that cannot be told yet. ``ledger`` as for :func:`removal_voided`."""
    last = cutoff(node, group_id, ledger.view.tables["members"], inner.author)
    if last is None or inner.seq <= last:
        return True
    return removal_voided(node, group_id, ledger, inner.author, pending=(inner, bundle_id))


def past_cutoff(
    node: Node, group_id: str, bundle: Inner | StoredBundle, bundle_id: bytes = b""
) -> bool:
    """Whether a bundle (a held one, or ``inner`` with its id) is known not to count for
    where it sits in its author's feed; a held one is opened only if that is needed. Not
    yet known is not past. Outside a write."""
    members = node.view(group_id).tables["members"]
    last = cutoff(node, group_id, members, bundle.author)
    if last is None or bundle.seq <= last:
        return False
    if not _remover_if_senior(node, group_id, members, bundle.author):
        return True  # told without opening it or loading the ledger
    if isinstance(bundle, StoredBundle):
        inner, bundle_id = opened(node, bundle), bundle.id
    else:
        inner = bundle
    if inner is None:
        return True
    return within_cutoff(node, group_id, node.ledger(group_id), inner, bundle_id) is False


def counted_through(node: Node, group_id: str, ledger: Ledger, device: bytes, last: int) -> int:
    """How far a removed device's feed counts, its cutoff being ``last``: all of it when
    R7 voids the removal (its member, the senior, removed the remover meanwhile)."""
    if removal_voided(node, group_id, ledger, device):
        return node.feeds.head(group_id, device)[0]
    return last
