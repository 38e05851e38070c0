"""Where a device's writes stop counting (SECURITY.md R4, R6, R7).

A removed device's bundles past the cutoff its removal records do not count, and neither
do those of a device caught signing two bundles for one seq, past the seq before (R4).

One exception, R7's "mutual removals both apply": two admins who remove each other at
the same moment each write the removal of the other past the cutoff the other gave them.
The bundle right after a device's cutoff still counts when it removes the very member
whose removal set that cutoff and its author had not seen its own removal — so both
removals count, on every node, whichever arrived first. Anything else its author wrote
past the cutoff stays out. Telling needs the changes the bundle builds on.
"""

from __future__ import annotations

from collections.abc import Mapping

from hearth import membership
from hearth.feeds import StoredBundle
from hearth.ledger import Ledger
from hearth.ledger.automerge_doc import change_hash
from hearth.ledger.ledger import LIVE
from hearth.node import Node
from hearth.protocol.bundle import Inner, decode_changes
from hearth.retraction import is_orphaned, opened

__all__ = ["answers_its_removal", "counted_through", "cutoff", "past_cutoff", "within_cutoff"]


def cutoff(node: Node, group_id: str, members: membership.Table, device: bytes) -> int | None:
    """The last seq of a device's feed that counts by its removal or departure, or by the
    seq before the one it signed twice, whichever is earlier (``None``: all of it counts)."""
    listed = membership.cutoff_of(members, device)
    proved = node.feeds.equivocations(group_id).get(device)
    if proved is None:
        return listed
    return proved if listed is None else min(listed, proved)


def answers_its_removal(node: Node, group_id: str, ledger: Ledger, inner: Inner) -> bool | None:
    """Whether a bundle right past its author's cutoff is that author's removal of the
    member who removed them, written before they knew of it (R7); ``None`` while the
    changes it builds on have not all arrived. ``ledger``: the group's, as it is now
    (inside a write, the one being written)."""
    members = ledger.view.tables["members"]
    card = next((c for c in membership.cards(members) if c.key == inner.author), None)
    if inner.kind != "content" or card is None or card.cutoff is None:
        return False
    proved = node.feeds.equivocations(group_id).get(inner.author)
    if inner.seq != card.cutoff + 1 or (proved is not None and proved <= card.cutoff):
        return False
    removal = members.get(card.member_id, {}).get("removed")
    remover = removal.get("created_by") if isinstance(removal, Mapping) else None
    if not isinstance(remover, str) or remover == card.member_id:
        return False
    document = ledger.doc
    changes = [c for name, c, _ in decode_changes(inner.payload) if name == LIVE]
    if not document.may_write(changes, document.objects_under("members")):
        return False
    own = {change_hash(c).hash for c in changes}
    deps = sorted({d for c in changes for d in change_hash(c).deps} - own)
    missing = [d for d in deps if not document.knows(d)]
    if any(is_orphaned(node, group_id, d) for d in missing):
        return False  # built on something that does not count (R8)
    if missing:
        return None
    then = document.as_of(deps)
    seen = then.read_table("members")
    if any(membership.is_gone(seen.get(m, {})) for m in (card.member_id, remover)):
        return False  # it knew it was out, or its target was out already
    then.apply(changes)
    return "removed" in then.read_table("members").get(remover, {})


def within_cutoff(node: Node, group_id: str, ledger: Ledger, inner: Inner) -> bool | None:
    """Whether a bundle counts for where it sits in its author's feed: at or before the
    cutoff, or right after it answering its author's removal (R7); ``None`` while that
    cannot be told yet. ``ledger`` as for :func:`answers_its_removal`."""
    last = cutoff(node, group_id, ledger.view.tables["members"], inner.author)
    if last is None or inner.seq <= last:
        return True
    return inner.seq == last + 1 and answers_its_removal(node, group_id, ledger, inner)


def past_cutoff(node: Node, group_id: str, bundle: Inner | StoredBundle) -> bool:
    """Whether a bundle is known not to count for where it sits in its author's feed (a
    held one is opened only if that is needed). Not yet known is not past. Outside a
    write."""
    last = cutoff(node, group_id, node.view(group_id).tables["members"], bundle.author)
    if last is None or bundle.seq <= last:
        return False
    if bundle.seq != last + 1:
        return True  # told without opening it or loading the ledger
    inner = opened(node, bundle) if isinstance(bundle, StoredBundle) else bundle
    return inner is None or within_cutoff(node, group_id, node.ledger(group_id), inner) is False


def counted_through(node: Node, group_id: str, ledger: Ledger, device: bytes, last: int) -> int:
    """How far a removed device's feed counts, its cutoff being ``last``: one further when
    the bundle held there answers its removal (R7)."""
    held = node.feeds.at(group_id, device, last + 1)
    inner = opened(node, held) if held is not None else None
    if inner is not None and answers_its_removal(node, group_id, ledger, inner):
        return last + 1
    return last
