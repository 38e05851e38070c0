"""Taking in bundles from relays, peers and files, in SECURITY.md §4's order.

Cheapest check first, failing closed, storing nothing on failure:
size and format → duplicate id → our topic? → admission signature → AEAD open → author
signature → chain (seq and prev) → authorization (a device of a member, not past its
cutoff, or a valid invite claim; every change under one of the device's actor ids; changes
to membership and invites only as :mod:`hearth.ledger.membership_rules` allows) → apply. A bundle
that comes before an earlier one of its feed, builds on changes not here yet, or is from a
device whose invite has not arrived yet, waits and is retried whenever something else is
applied. Every rejection is logged with its reason and counted in the store, per source
(:func:`tallied` counts many in memory and writes them once). What a late
removal or an equivocation takes back is :mod:`hearth.validity.retraction`'s job. A snapshot is
taken only together with the bundles it covers, checked against them
(:func:`take_snapshot`, :mod:`hearth.validity.snapshots`, docs/security.md §6, R13).
"""

from __future__ import annotations

import enum
import functools
import logging
import weakref
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from hearth.crypto import key_id
from hearth.errors import Damaged, HearthError, LedgerError, ProtocolError
from hearth.group.rotation import epoch_of, take_epoch_op, take_hand_on
from hearth.ledger import Ledger, LedgerDoc, attribution, records
from hearth.ledger import membership_rules as membership
from hearth.ledger.automerge_doc import EntryRef, change_hash
from hearth.ledger.change_ops import ObjectRef
from hearth.ledger.ledger import LIVE
from hearth.neighbourhood import participation
from hearth.node.changes import BundlesApplied
from hearth.node.feeds import APPLIED, INVALID, REFUSED, WAITING, StoredBundle
from hearth.node.node import Node, verify_genesis
from hearth.protocol.bundle import (
    Envelope,
    Inner,
    decode_changes,
    decode_snapshot,
    open_envelope,
    parse_envelope,
)
from hearth.protocol.invite_token import decode_claim
from hearth.store import ChangeRow
from hearth.validity import joins, snapshots, steps
from hearth.validity.cutoffs import counted_through, past_cutoff, removal_voided, within_cutoff
from hearth.validity.retraction import (
    change_ids,
    equivocated,
    is_orphaned,
    not_counted,
    notice,
    opened,
    orphan,
    second_bundles,
    take_out,
    unorphan,
)

__all__ = [
    "Author",
    "Damage",
    "NotCounted",
    "Outcome",
    "PastCutoff",
    "Rejections",
    "Verdict",
    "author_of",
    "confirm_joins",
    "damage",
    "rejections",
    "take_in",
    "take_snapshot",
    "tallied",
]

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """What became of a bundle."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    WAITING = "waiting"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The verdict on one bundle, and how many bundles were applied because of it."""

    verdict: Verdict
    reason: str = ""
    group_id: str = ""
    applied: int = 0
    damaged: bool = False  # rejected as not what was sent (R16): it may come whole later


class NotCounted(ProtocolError):
    """A sound bundle whose author may not write what it holds: it never counts, nor does
    whatever builds on its changes — but a key it hands out still opens bundles others
    sealed under it before they knew."""


class PastCutoff(NotCounted):
    """A bundle a removed device wrote after its cutoff (R6)."""


class SecondClaim(NotCounted):
    """A join claim to an invite its maker confirmed for another device (R14)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"a second claim to one invite (by '{name}'): a join token works once, and its "
            "maker confirmed another device"
        )
        self.name = name


_WAITING_FOR_CONFIRMATION = "waiting for the device that invited it to confirm the join"


class _Wait(Exception):
    """The bundle cannot be judged yet."""


_MAX_FLIPS = 16  # removals judged late for one bundle: far more than any real group sees


class _Equivocation(Exception):
    """A device signed two different bundles for one place in its feed (R4)."""

    def __init__(self, envelope: Envelope, inner: Inner, held: Envelope) -> None:
        super().__init__(f"equivocation: two different bundles at seq {inner.seq} from one device")
        self.envelope = envelope
        self.inner = inner
        self.held = held  # the one this node had


class _Flip(Exception):
    """A removal arrived after bundles it makes invalid were applied (SECURITY.md R8)."""

    def __init__(self, device: bytes, cutoff: int) -> None:
        super().__init__(f"bundles past the removal of device {device.hex()[:12]}")
        self.device = device
        self.cutoff = cutoff


def take_in(node: Node, data: bytes, *, source: str) -> Outcome:
    """Check a bundle from ``source`` and apply it if it is valid; whoever watches the
    node for arrivals (the app) hears of what was applied."""
    outcome = _take_in(node, data, source)
    if outcome.verdict is Verdict.APPLIED:
        node.changes.notify(BundlesApplied(outcome.group_id))
    return outcome


def _take_in(node: Node, data: bytes, source: str) -> Outcome:
    try:
        envelope = parse_envelope(data)
    except Damaged as exc:
        return _damaged(node, source, str(exc))
    if node.feeds.get(envelope.id) is not None or node.feeds.holds_proof(envelope.id):
        # (A proof of a second bundle for one seq was judged when it came: every sync
        # passes it on again.)
        return Outcome(verdict=Verdict.DUPLICATE)
    found = node.feeds.keys_for_topic(envelope.topic)
    if found is None:
        return _take_neighbourhood_record(node, envelope, source)
    group_id, keys = found
    if not envelope.relay_signature_valid(keys.relay_key.public):
        return _damaged(node, source, "a bundle whose admission signature is not the group's")
    try:
        inner = open_envelope(envelope, keys)
    except Damaged as exc:
        return _damaged(node, source, str(exc))
    except ProtocolError as exc:
        return _reject(node, source, str(exc))
    outcome: Outcome | None = None
    flipped = False  # something did not count: what waited on it goes on without it
    took_out = False  # something that counted was taken out: removals in it may not count
    for _ in range(_MAX_FLIPS):
        try:
            if outcome is None:
                with node.store.write():  # a rejection rolls back all the bundle touched
                    if inner.kind == "snapshot":
                        outcome = _lone_snapshot(node, group_id, envelope, inner)
                    elif inner.kind in ("content", "epoch", "keys") and inner.seq >= 1:
                        outcome = _judge(node, group_id, envelope, inner)
                    else:
                        raise ProtocolError(f"a bundle of unknown kind {inner.kind!r}")
            if outcome.verdict is Verdict.WAITING and joins.confirm_claims(node, group_id):
                flipped = True  # this device made the invite a waiting claim is to (R14)
            # A removed author's bundle may void its removal (R7): then all that followed
            # from the removal is judged again, from the start (R12).
            answer = outcome.verdict is not Verdict.DUPLICATE and _voids_removal(
                node, group_id, inner
            )
            if outcome.verdict is not Verdict.APPLIED and not flipped and not answer:
                return outcome
            with node.store.write():
                if answer:
                    _rejudge_or_keep(node, group_id)
                retried = _retry_waiting(node, group_id)
                if took_out and any(
                    _changes_membership(node, group_id, opened(node, b))
                    for b in node.feeds.invalid(group_id)
                ):
                    _rejudge_or_keep(node, group_id)  # a removal that no longer counts
            if outcome.verdict is Verdict.REJECTED:
                return outcome
            if outcome.verdict is Verdict.APPLIED or retried:
                return Outcome(
                    verdict=Verdict.APPLIED, group_id=group_id, applied=outcome.applied + retried
                )
            return outcome
        except NotCounted as exc:
            with node.store.write():
                not_counted(node, group_id, inner)
                if isinstance(exc, SecondClaim):
                    node.feeds.keep(group_id, envelope, inner, REFUSED)
                    _refuse_joiner(node, group_id, inner.author, exc.name)
                if isinstance(exc, PastCutoff):  # kept: the removal may yet not count
                    node.feeds.keep(group_id, envelope, inner, INVALID)
                    if _changes_membership(node, group_id, inner):
                        _rejudge_or_keep(node, group_id)  # a rival removal
            outcome = _reject(node, source, str(exc))
            flipped = True  # what waited on its changes goes on without them
        except HearthError as exc:
            return _reject(node, source, str(exc))
        except _Flip as flip:  # the bundle, or a waiting one it let through, removed someone late
            take_out(node, group_id, flip.device, flip.cutoff)
            flipped = took_out = True
        except _Equivocation as proof:
            card = _card(node.view(group_id).tables["members"], inner.author)
            name = node.view(group_id).member_name(card.member_id) if card else "a member"
            outcome = _reject(node, source, str(proof))
            if equivocated(node, group_id, inner, proof.envelope, proof.held, name):
                flipped = took_out = True  # what waited on the changes taken out goes on
            else:
                return outcome
    return _reject(node, source, "a bundle that keeps changing who is in the group")


def _refuse_joiner(node: Node, group_id: str, device: bytes, name: str) -> None:
    """A device's join claim lost to another one on the same invite (R14): mark its held
    bundles refused, so that none waits for anything, and tell the admins (inside a
    write)."""
    for stored in node.feeds.all(group_id):
        if stored.author == device:
            node.feeds.set_state(stored.id, REFUSED)
    said = (
        f"someone calling themselves '{name}' tried to join with an invite another device "
        "had used already; they are not in the group"
    )
    if not node.store.query(
        "SELECT 1 FROM rejections WHERE source = 'second-claim' AND reason = ?", (said,)
    ):
        notice(node, "second-claim", said)


def _is_second_claim(node: Node, group_id: str, first: StoredBundle) -> bool:
    """Whether a device's held first bundle is a claim that lost to another (R14)."""
    inner = opened(node, first)
    if inner is None or not inner.claim:
        return False
    claim = decode_claim(inner.claim)
    invite = node.view(group_id).tables["invites"].get(claim.invite_id, {})
    confirmed = joins.confirmed_device(invite)
    return confirmed is not None and confirmed != first.author


def _voids_removal(node: Node, group_id: str, inner: Inner) -> bool:
    """Whether a bundle's author is removed, by a removal that R7 voids now that it is
    here (it answers the removal, or completes the chain to an answer held already)."""
    members = node.view(group_id).tables["members"]
    if membership.cutoff_of(members, inner.author) is None:
        return False
    return removal_voided(node, group_id, node.ledger(group_id), inner.author) is True


def confirm_joins(node: Node, group_id: str) -> int:
    """Confirm the claims waiting here to invites this device made (R14,
    :func:`hearth.validity.joins.confirm_claims`) and let them count; return how many."""
    confirmed = joins.confirm_claims(node, group_id)
    if confirmed:
        with node.store.write():
            _retry_waiting(node, group_id)
    return confirmed


def _take_neighbourhood_record(node: Node, envelope: Envelope, source: str) -> Outcome:
    """A bundle of one of our groups' neighbourhoods: checked the same way up to the
    author's signature, then kept if it is a group's signed record
    (:mod:`hearth.neighbourhood.participation`)."""
    found = participation.keys_for_topic(node, envelope.topic)
    if found is None:
        # Nothing of ours can be on that topic: a relay sent what we did not ask for.
        return _damaged(node, source, "a bundle for a group this node is not in")
    membership, keys = found
    if not envelope.relay_signature_valid(keys.relay_key.public):
        return _damaged(node, source, "a bundle whose admission signature is not the group's")
    try:
        taken = participation.take_record(node, membership, envelope, open_envelope(envelope, keys))
    except Damaged as exc:
        return _damaged(node, source, str(exc))
    except ProtocolError as exc:
        return _reject(node, source, str(exc))
    for _ in range(taken.dropped):  # counted against whoever brought the newest of them
        _reject(node, source, "a neighbourhood record under a key no group there holds")
    verdict = Verdict.APPLIED if taken.new else Verdict.DUPLICATE
    return Outcome(verdict=verdict, group_id=membership.group_id, applied=int(taken.new))


class _Tally:
    """Rejections and damage counted in memory while many bundles come from one place (a
    file), written once at the end: junk costs no write, and no log line, each."""

    def __init__(self) -> None:
        self.damaged: dict[str, tuple[int, str]] = {}  # source -> (count, last reason)
        self.rejected: dict[tuple[str, str], int] = {}  # (source, reason) -> count

    def damage(self, source: str, reason: str) -> None:
        count, _ = self.damaged.get(source, (0, ""))
        self.damaged[source] = (count + 1, reason)

    def reject(self, source: str, reason: str) -> None:
        self.rejected[source, reason] = self.rejected.get((source, reason), 0) + 1


_TALLIES: weakref.WeakKeyDictionary[Node, _Tally] = weakref.WeakKeyDictionary()


@contextmanager
def tallied(node: Node) -> Iterator[None]:
    """Within: what arrives damaged or fails a rule is counted in memory, and written and
    logged once per source at the end (as for `hearth bundle import` of a whole file)."""
    if node in _TALLIES:
        yield
        return
    tally = _TALLIES[node] = _Tally()
    try:
        yield
    finally:
        del _TALLIES[node]
        now = node.clock.now_ms()
        with node.store.write():
            for source, (count, reason) in tally.damaged.items():
                log.warning("%d damaged bundles from %s, the last: %s", count, source, reason)
                _count_damage(node, source, count, now)
            for (source, reason), count in tally.rejected.items():
                log.warning("rejected %d bundles from %s: %s", count, source, reason)
                _count_rejection(node, source, reason, count, now)


def _count_damage(node: Node, source: str, count: int, now: int) -> None:
    node.store.run(
        "INSERT INTO damaged_arrivals(source, count, last_at) VALUES (?, ?, ?) "
        "ON CONFLICT(source) DO UPDATE SET count = count + excluded.count, "
        "last_at = excluded.last_at",
        (source, count, now),
    )


_MAX_REASON = 200
_MAX_REASONS = 32  # a source's distinct reasons kept; more are counted together
_OTHER_REASONS = "(other reasons)"


def _count_rejection(node: Node, source: str, reason: str, count: int, now: int) -> None:
    reason = reason[:_MAX_REASON]
    kept = node.store.query(
        "SELECT COUNT(*), SUM(reason = ?) FROM rejected_arrivals WHERE source = ?",
        (reason, source),
    )[0]
    if not kept[1] and int(kept[0]) >= _MAX_REASONS:
        reason = _OTHER_REASONS
    node.store.run(
        "INSERT INTO rejected_arrivals(source, reason, count, last_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(source, reason) DO UPDATE SET count = count + excluded.count, "
        "last_at = excluded.last_at",
        (source, reason, count, now),
    )


def _damaged(node: Node, source: str, reason: str) -> Outcome:
    """A bundle that is not what was sent (R16): counted against its source, nothing kept,
    and its sender's cursor left where it was, so that it is read again."""
    tally = _TALLIES.get(node)
    if tally is not None:
        tally.damage(source, reason)
    else:
        log.warning("a damaged bundle from %s: %s", source, reason)
        with node.store.write():
            _count_damage(node, source, 1, node.clock.now_ms())
    return Outcome(verdict=Verdict.REJECTED, reason=reason, damaged=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Damage:
    """How many bundles arrived damaged from one relay, peer or file, and when last."""

    source: str
    count: int
    last_at: int


def damage(node: Node) -> list[Damage]:
    """Every source that sent damaged bundles, most recent first."""
    rows = node.store.query(
        "SELECT source, count, last_at FROM damaged_arrivals ORDER BY last_at DESC, source"
    )
    return [Damage(source=str(s), count=int(c), last_at=int(t)) for s, c, t in rows]


def _reject(node: Node, source: str, reason: str) -> Outcome:
    """A sound bundle that fails a rule: counted against its source and reason (a few
    dozen reasons a source at most, whatever it sends), never kept."""
    tally = _TALLIES.get(node)
    if tally is not None:
        tally.reject(source, reason)
    else:
        log.warning("rejected a bundle from %s: %s", source, reason)
        with node.store.write():
            _count_rejection(node, source, reason, 1, node.clock.now_ms())
    return Outcome(verdict=Verdict.REJECTED, reason=reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejections:
    """How many sound bundles from one relay, peer or file failed a rule for one reason."""

    source: str
    reason: str
    count: int
    last_at: int


def rejections(node: Node) -> list[Rejections]:
    """Why bundles that failed a rule did, by source, most recent first."""
    rows = node.store.query(
        "SELECT source, reason, count, last_at FROM rejected_arrivals "
        "ORDER BY last_at DESC, source, reason"
    )
    return [
        Rejections(source=str(s), reason=str(r), count=int(c), last_at=int(t))
        for s, r, c, t in rows
    ]


def _judge(node: Node, group_id: str, envelope: Envelope, inner: Inner) -> Outcome:
    feeds = node.feeds
    existing = feeds.at(group_id, inner.author, inner.seq)
    if existing is not None:
        if existing.id == envelope.id:
            return Outcome(verdict=Verdict.DUPLICATE)
        raise _Equivocation(envelope, inner, parse_envelope(existing.envelope))
    first = feeds.at(group_id, inner.author, 1) if inner.seq > 1 else None
    if first is not None and first.state == REFUSED and _is_second_claim(node, group_id, first):
        feeds.keep(group_id, envelope, inner, REFUSED)
        return Outcome(
            verdict=Verdict.REJECTED,
            group_id=group_id,
            reason="a bundle of a device whose join claim did not count (a second claim)",
        )
    if past_cutoff(node, group_id, inner, envelope.id):
        # Judged now, gap or not: what builds on it must not wait for it.
        raise PastCutoff("a bundle from a removed device, written after its removal")
    head_seq, head_id = feeds.head(group_id, inner.author)
    if inner.seq > head_seq + 1:
        feeds.keep(group_id, envelope, inner, WAITING)
        # Its keys open bundles now (some may be what it waits for); whether an epoch op
        # counts is judged in its turn.
        if inner.kind == "epoch":
            take_epoch_op(node, group_id, inner, eligible=None)
        elif inner.kind == "keys":
            take_hand_on(node, group_id, inner)
        return Outcome(
            verdict=Verdict.WAITING,
            group_id=group_id,
            reason=f"waiting for seq {head_seq + 1} of its feed",
        )
    if inner.seq <= head_seq:
        return Outcome(verdict=Verdict.DUPLICATE)  # already applied, or inside a snapshot
    if inner.prev != head_id:
        raise ProtocolError("the bundle's chain is broken: it does not follow the one before")
    try:
        with node.store.savepoint():  # a bundle that must wait leaves nothing stored
            _apply(node, group_id, inner, envelope.id)
    except _Wait as wait:
        feeds.keep(group_id, envelope, inner, WAITING)
        if inner.kind == "epoch":  # waiting for what its author had seen: its keys open now
            take_epoch_op(node, group_id, inner, eligible=None)
        return Outcome(verdict=Verdict.WAITING, group_id=group_id, reason=str(wait))
    feeds.keep(group_id, envelope, inner, APPLIED)
    return Outcome(verdict=Verdict.APPLIED, group_id=group_id, applied=1)


def _lone_snapshot(node: Node, group_id: str, envelope: Envelope, inner: Inner) -> Outcome:
    """A snapshot that came on its own: taken only with the bundles it covers (R13,
    :func:`take_snapshot`), so it is noted and left; the bundles come as they are."""
    decode_snapshot(inner.payload)  # malformed: refused like any malformed bundle
    node.store.run("INSERT OR IGNORE INTO seen_snapshots(id) VALUES (?)", (envelope.id,))
    return Outcome(
        verdict=Verdict.DUPLICATE,
        group_id=group_id,
        reason="a snapshot is taken only with the bundles it covers",
    )


def take_snapshot(
    node: Node, data: bytes, bundles: Sequence[bytes] | snapshots.Opener, *, source: str
) -> tuple[Outcome, frozenset[bytes]]:
    """Take in a snapshot together with the bundles that came with it (R13): checked
    against them as :mod:`hearth.validity.snapshots` says, then its documents merged and the
    bundles it covers kept as applied. Return the verdict and the ids of the bundles it
    took; the others — all of them if it was refused — go through :func:`take_in`."""
    opener = (
        bundles if isinstance(bundles, snapshots.Opener) else snapshots.Opener.of(node, bundles)
    )
    return steps.run(take_snapshot_steps(node, data, opener, source=source))


def take_snapshot_steps(
    node: Node, data: bytes, opener: snapshots.Opener, *, source: str
) -> steps.Steps[tuple[Outcome, frozenset[bytes]]]:
    """:func:`take_snapshot` in steps (:mod:`hearth.validity.steps`): the covered bundles
    opened and the documents loaded off the event loop, the check with pauses. What the
    check read of the node is read again if anything was written to the store meanwhile
    (another relay's bundles, a member's edit): then it is judged again, at once."""
    try:
        return (yield from _take_snapshot_with(node, data, opener, source))
    finally:
        opener.close()


def _take_snapshot_with(
    node: Node, data: bytes, opener: snapshots.Opener, source: str
) -> steps.Steps[tuple[Outcome, frozenset[bytes]]]:
    none: frozenset[bytes] = frozenset()
    try:
        envelope = parse_envelope(data)
    except Damaged as exc:
        return _damaged(node, source, str(exc)), none
    found = node.feeds.keys_for_topic(envelope.topic)
    if found is None:
        return _damaged(node, source, "a snapshot for a group this node is not in"), none
    group_id, keys = found
    if not envelope.relay_signature_valid(keys.relay_key.public):
        return _damaged(
            node, source, "a snapshot whose admission signature is not the group's"
        ), none
    try:
        inner = open_envelope(envelope, keys)
        if inner.kind != "snapshot":
            raise ProtocolError("a bundle taken as a snapshot that is not one")
        docs, heads = decode_snapshot(inner.payload)
    except Damaged as exc:
        return _damaged(node, source, str(exc)), none
    except ProtocolError as exc:
        return _reject(node, source, str(exc)), none
    if node.store.query("SELECT 1 FROM seen_snapshots WHERE id = ?", (envelope.id,)) or all(
        seq <= node.feeds.head(group_id, author)[0] for author, seq, _ in heads
    ):
        # Nothing in it we lack (a node that kept up sees the snapshots others publish):
        # taking it in would only cost a load and a rebuild.
        with node.store.write():
            node.store.run("INSERT OR IGNORE INTO seen_snapshots(id) VALUES (?)", (envelope.id,))
        return Outcome(verdict=Verdict.DUPLICATE, group_id=group_id), none
    actor = node.group(group_id).actor
    try:
        # Off the loop: loaded while the covered bundles' last chunks are still being
        # opened elsewhere, then those awaited.
        incoming: dict[str, LedgerDoc] = yield functools.partial(_load_snapshot, docs, actor)
        gid = bytes.fromhex(group_id)
        carried = [c for c in (yield opener.carried) if c.inner.group_id == gid]
        mark = node.store.mark()
        covered = yield from snapshots.check_steps(node, group_id, incoming, heads, carried)
        with node.store.write():  # refused: nothing of it stays
            if node.store.mark() != mark:  # the node changed while the loop ran
                covered = snapshots.check_snapshot(node, group_id, incoming, heads, carried)
            taken = _take_snapshot(
                node, group_id, envelope, inner, (docs, incoming), heads, covered
            )
    except HearthError as exc:
        outcome = _reject(
            node, source, f"a snapshot refused (its bundles are taken instead): {exc}"
        )
        return outcome, none
    retried = _retry_after(node, group_id)  # what waited on the changes it brought
    node.changes.notify(BundlesApplied(group_id))
    applied = Outcome(verdict=Verdict.APPLIED, group_id=group_id, applied=1 + len(taken) + retried)
    return applied, frozenset(taken)


def _retry_after(node: Node, group_id: str) -> int:
    """Apply the bundles that waited for what a snapshot brought; return how many."""
    for _ in range(_MAX_FLIPS):
        try:
            with node.store.write():
                return _retry_waiting(node, group_id)
        except _Flip as flip:  # a waiting removal that takes out what was applied
            take_out(node, group_id, flip.device, flip.cutoff)
        except HearthError as exc:
            log.warning("bundles waiting on a snapshot could not be judged: %s", exc)
            return 0
    return 0


def _take_snapshot(
    node: Node,
    group_id: str,
    envelope: Envelope,
    inner: Inner,
    documents: tuple[Sequence[tuple[str, bytes]], dict[str, LedgerDoc]],
    heads: Sequence[tuple[bytes, int, bytes]],
    covered: Sequence[snapshots.Carried],
) -> list[bytes]:
    """Take a snapshot shown to hold what the ``covered`` bundles carry
    (:func:`snapshots.check_snapshot`): merge its documents (as saved, and loaded), keep
    those bundles as applied (inside a write); return their ids."""
    docs, incoming = documents
    listed = incoming[LIVE].read_table("members") if LIVE in incoming else {}
    card = _card(listed, inner.author) or _card(node.view(group_id).tables["members"], inner.author)
    if card is None:
        raise ProtocolError("a snapshot from a device that is not a member's")
    if card.cutoff is not None:
        raise ProtocolError("a snapshot from a removed device")
    with node.writing(group_id) as ledger:
        # What our copies held already is in them after the merge too: asked before it,
        # a fresh device's handful of changes, not the snapshot's whole history (whose
        # index the app builds while its member is idle, Node.warm_up).
        stored = {name: node.store.changes_after(group_id, name, 0) for name in incoming}
        held = {
            name: {r.hash for r in rows if ledger.document(name).knows(r.hash)}
            for name, rows in stored.items()
        }
        as_saved = {name: doc.heads() for name, doc in incoming.items()}  # merge uses them up
        for name, doc in incoming.items():
            ledger.document(name).merge(doc)
        ledger.view.rebuild(ledger.docs())
        node.feeds.cover(group_id, heads)
        node.store.run("INSERT INTO seen_snapshots(id) VALUES (?)", (envelope.id,))
        saved = dict(docs)
        for name in incoming:
            target = ledger.document(name)
            waiting = [
                r.hash
                for r in stored[name]
                if r.hash not in held[name] and not target.knows(r.hash)
            ]
            data, through = _to_store(
                node, group_id, name, target, stored[name], (as_saved[name], saved[name])
            )
            node.store.put_snapshot(group_id, name, data, through, keep=waiting)
    # Checked like any bundle: held now as applied ones are (those that waited here too).
    node.feeds.keep_applied(group_id, [(item.envelope, item.inner) for item in covered])
    return [item.envelope.id for item in covered]


def _load_snapshot(docs: Sequence[tuple[str, bytes]], actor: bytes) -> dict[str, LedgerDoc]:
    """A snapshot's documents, loaded (touching nothing of the node's: done off the
    event loop); :class:`ProtocolError` if one does not load."""
    try:
        return {name: LedgerDoc.load(saved, actor) for name, saved in docs}
    except LedgerError as exc:
        raise ProtocolError(f"a snapshot holding a document that does not load ({exc})") from exc


def _to_store(
    node: Node,
    group_id: str,
    name: str,
    merged: LedgerDoc,
    rows: Sequence[ChangeRow],
    snapshot: tuple[Sequence[bytes], bytes],
) -> tuple[bytes, int]:
    """What to store for a document after taking in a snapshot (its heads and bytes): the
    saved document and the last stored change it covers. A device that had no saved
    document yet (a fresh one) keeps the snapshot's bytes as they came, covering only the
    stored changes before the first one the snapshot lacks (its own join), which stay and
    are applied again on load — saving a 10,000-entry document again costs ~75 ms."""
    heads, data = snapshot
    last = node.store.last_seq()
    if node.store.snapshot(group_id, name) is None:
        beyond = merged.hashes_since(heads)
        seqs = {r.hash: r.seq for r in rows}
        if beyond <= seqs.keys():
            return data, min((seqs[h] for h in beyond), default=last + 1) - 1
    return merged.save(), last


@dataclass(frozen=True, slots=True, kw_only=True)
class Author:
    """Who wrote a bundle, as far as the group's membership says."""

    device: bytes  # the device's signing key
    actors: frozenset[bytes] | None  # the actor ids it may write under (None: any)
    member_id: str | None  # the member the device writes for (None: the founding device)
    joining: str | None = None  # the member a valid invite claim lets it add
    invite_id: str | None = None  # the invite that claim uses


def _card(members: membership.Table, device_key: bytes) -> membership.Card | None:
    return membership.card_of(members, device_key)


def author_of(node: Node, group_id: str, ledger: Ledger, inner: Inner, bundle_id: bytes) -> Author:
    """Who may have written the bundle, or raise why nobody may have (R1, R2, R6).

    A member's device writes under the actor ids its card lists, up to its cutoff once
    removed; an unknown device may write with a claim to an invite an admin recorded and
    nobody else used; the group's founding device may write before its card is known.
    """
    view = ledger.view
    members = view.tables["members"]
    card = _card(members, inner.author)
    if card is not None:
        counts = within_cutoff(node, group_id, ledger, inner, bundle_id)
        if counts is None:
            raise _Wait("waiting for the changes it builds on, to see what it answers")
        if not counts:
            raise PastCutoff("a bundle from a removed device, written after its removal")
        return Author(device=inner.author, actors=card.actors, member_id=card.member_id)
    if inner.claim:
        claim = decode_claim(inner.claim)
        if claim.device_key != inner.author:
            raise ProtocolError("a join claim for another device")
        invite = view.tables["invites"].get(claim.invite_id)
        if invite is None:
            raise _Wait("waiting for the invite it claims")
        if not claim.verifies(bytes.fromhex(str(invite.get("key", "")))):
            raise ProtocolError("a join claim that the invite's key did not sign")
        member_id = key_id(claim.member_key)
        if invite.get("kind") == "device" and invite.get("member") != member_id:
            raise ProtocolError("a claim to another member's device invite")
        if invite.get("kind") != "device" and member_id in view.tables["members"]:
            # The claim is signed by the invite's key alone: naming a member's (public)
            # key, it would join as them — judged as an admin, if they are one.
            raise ProtocolError(joins.CLAIM_AS_MEMBER)
        if joins.needs_confirming(invite):
            confirmed = joins.confirmed_device(invite)
            if confirmed is None:
                raise _Wait(_WAITING_FOR_CONFIRMATION)
            if confirmed != inner.author:
                raise SecondClaim(claim.member_name)
        else:  # an invite from before R14: the first claim a node heard of
            claimed_by = invite.get("claimed_by")
            if isinstance(claimed_by, str) and claimed_by != member_id:
                raise ProtocolError("a join claim for an invite someone else already used")
        return Author(
            device=inner.author,
            actors=frozenset(claim.actors),
            member_id=member_id,
            joining=member_id,
            invite_id=claim.invite_id,
        )
    if verify_genesis(node.group(group_id).genesis).get("device_key") == inner.author.hex():
        return Author(device=inner.author, actors=None, member_id=None)
    raise ProtocolError("a bundle from a device that is not a member's")


def _apply(node: Node, group_id: str, inner: Inner, bundle_id: bytes) -> None:
    if inner.kind == "keys":  # any member may hand on keys it holds (hearth.group.rotation)
        author_of(node, group_id, node.ledger(group_id), inner, bundle_id)
        take_hand_on(node, group_id, inner)
        return
    if inner.kind == "epoch":
        ledger = node.ledger(group_id)
        author = author_of(node, group_id, ledger, inner, bundle_id)
        members = _members_seen(node, group_id, ledger, inner)
        if author.member_id is not None and (
            membership.effective_role(members, author.member_id) != "admin"
            or membership.is_gone(members.get(author.member_id, {}))
        ):
            raise NotCounted("a new group key from a member who is not an admin")
        # It counts now, whatever was said of it before (refused before its author was
        # an admin here, or past a cutoff that went away).
        node.feeds.rejudge_epoch(group_id, epoch_of(group_id, inner))
        take_epoch_op(node, group_id, inner)
        return
    by_doc: defaultdict[str, list[bytes]] = defaultdict(list)
    touched: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for doc, change, refs in decode_changes(inner.payload):
        by_doc[doc].append(change)
        touched[doc] += refs
    # Who wrote it and whether it must wait are judged before the ledger is touched: a
    # bundle that waits (the common case while catching up out of order) then leaves the
    # loaded document as it is, instead of having it loaded again from the store.
    ledger = node.ledger(group_id)
    author = author_of(node, group_id, ledger, inner, bundle_id)
    ready = {doc: _ready(node, group_id, ledger.document(doc), s) for doc, s in by_doc.items()}
    _check_names(node, group_id, ledger, author, ready, touched)
    with node.writing(group_id) as ledger:
        # An actor id the author's card does not list yet: allowed only if this bundle
        # adds it to the author's own card (R8's writing again, under a fresh actor id).
        unlisted: set[bytes] = set()
        for doc, changes in ready.items():
            document = ledger.document(doc)
            # Only what goes in: an orphan never does, nor does the actor id it is under
            # (the change listing a fresh actor id can itself be an orphan, R8, and then
            # so is everything written under it — refusing the bundle would stop the
            # author's feed there for good).
            unlisted |= {
                info.actor
                for info in map(change_hash, changes)
                if author.actors is not None and info.actor not in author.actors
            }
            guard = document.objects_under("members") | document.objects_under("invites")
            guarded = document.may_write(changes, guard)
            if guarded and doc != LIVE:
                raise ProtocolError("a change to membership inside an archive")
            # The view replaces entries rather than changing them: a shallow copy keeps
            # the tables as they were before this bundle.
            before = (
                {t: dict(ledger.view.tables[t]) for t in ("members", "invites")}
                if doc == LIVE
                else {}
            )
            # A joining device writes from the little its invite gave it; its claim was
            # checked against the invite here (author_of), so it is judged by this state.
            seen_by_author = (
                _seen_by_author(document, changes, guard)
                if guarded and author.joining is None and author.member_id is not None
                else None
            )
            infos = [(change_hash(c).hash, c) for c in changes]
            # What the view reads again is what the changes' operations write, not what
            # their author says they touched (None: everything).
            written = document.entries_written(changes, touched[doc])
            read_again = None if written is None else sorted(written)
            node.store.append_changes(group_id, doc, infos, local=False, touched=read_again)
            try:
                applied = ledger.apply_remote_to(document, changes, read_again)
            except LedgerError as exc:
                if "duplicate seq" in str(exc):
                    # The author wrote again what a late removal took out (R8); this node
                    # still holds the old change until it hears of that removal.
                    raise _Wait("waiting for a removal it follows") from exc
                raise ProtocolError(f"its changes could not be applied ({exc})") from exc
            if doc == LIVE and (guarded or applied - {i for i, _ in infos}):
                _check_membership(node, group_id, ledger, before, author, seen_by_author)
        if unlisted:
            card = _card(ledger.doc.read_table("members"), inner.author)
            if card is None or not unlisted <= card.actors:
                raise ProtocolError("a change under an actor id that is not the author's")


def _check_names(
    node: Node,
    group_id: str,
    ledger: Ledger,
    author: Author,
    ready: dict[str, list[bytes]],
    touched: Mapping[str, Sequence[EntryRef]],
) -> None:
    """R2a: every change writes in the name of the member whose device signed the bundle
    (:mod:`hearth.ledger.attribution`) and leaves what others wrote as they wrote it
    (:mod:`hearth.ledger.records`); an archive copies what the live document held.
    ``touched``: the entries the bundle says it touched, by document."""
    member_id = author.member_id
    if member_id is None:  # the founding device, before its card is known
        member_key = verify_genesis(node.group(group_id).genesis).get("member_key")
        member_id = key_id(bytes.fromhex(str(member_key)))
    live = ready.get(LIVE, [])
    live_heads = records.builds_on(live)
    moved: records.Moved = {}
    for doc, changes in ready.items():
        if doc == LIVE:
            attribution.check_own_names(changes, member_id)
        else:
            archive = ledger.document(doc)
            attribution.check_archive_names(archive, ledger.doc, changes, member_id, live_heads)
            for entry, paths in records.check_archive_copy(
                archive, ledger.doc, changes, live_heads
            ).items():
                moved.setdefault(entry, set()).update(paths)
    spared = ledger.doc.objects_under("members") | ledger.doc.objects_under("invites")
    records.check_records(
        ledger.doc,
        live,
        member_id,
        touched.get(LIVE, []),
        moved,
        spared,
        tagged=node.tags_entry_ids(group_id),
    )


def _members_seen(node: Node, group_id: str, ledger: Ledger, inner: Inner) -> membership.Table:
    """The members table as an epoch op's author saw it: at the op's auth heads, once
    they are all here (SECURITY.md R5). Judged by this node's own table instead, an op
    that arrived before the removal that made its author the admin left would not count
    here and count where it arrived after; and a node takes a bundle from a relay once."""
    document = ledger.doc
    heads = _counted_heads(node, group_id, inner.auth_heads)
    if any(not document.knows(h) for h in heads):
        raise _Wait("waiting for the changes its author had seen")
    if not heads or sorted(heads) == sorted(document.heads()):
        return ledger.view.tables["members"]
    return document.as_of(heads).read_table("members")


def _counted_heads(node: Node, group_id: str, heads: Sequence[bytes]) -> list[bytes]:
    """``heads`` with each change that does not count (R8) replaced by what it was built
    on, down to changes that do: the state its author saw, less what turned out not to
    count — not less everything that came before it too."""
    found: set[bytes] = set()
    todo, seen = list(heads), set()
    while todo:
        head = todo.pop()
        if head in seen:
            continue
        seen.add(head)
        if not is_orphaned(node, group_id, head):
            found.add(head)
        elif (change := _held_change(node, group_id, head)) is not None:
            todo.extend(change_hash(change).deps)
    return sorted(found)


def _held_change(node: Node, group_id: str, change: bytes) -> bytes | None:
    """The bytes of a change some held bundle carries (rare: an orphan's ancestry)."""
    for stored in node.feeds.all(group_id):
        inner = opened(node, stored)
        if inner is not None and inner.kind == "content":
            for _, data, _ in decode_changes(inner.payload):
                if change_hash(data).hash == change:
                    return data
    return None


def _ready(node: Node, group_id: str, document: LedgerDoc, changes: list[bytes]) -> list[bytes]:
    """The changes that can go in now, in order, or :class:`_Wait` for those they build on.

    Automerge would hold a change whose dependencies are missing and slip it in with some
    later bundle — which would then be judged for it. So a bundle waits until every change
    it builds on is here. A change built on an orphaned one (R8) is an orphan too: recorded
    and left out, so that it holds nothing up.
    """
    ready: list[bytes] = []
    here: set[bytes] = set()
    orphans: set[bytes] = set()
    for change in changes:
        info = change_hash(change)
        missing = [d for d in info.deps if d not in here and not document.knows(d)]
        if missing:
            # Built on one orphan, it is an orphan, whatever else it builds on: waiting
            # for the rest could wait for good (they may wait on what comes after it).
            if not any(d in orphans or is_orphaned(node, group_id, d) for d in missing):
                raise _Wait("waiting for changes it builds on")
            orphans.add(info.hash)
            continue
        here.add(info.hash)
        ready.append(change)
    orphan(node, group_id, orphans)
    return ready


_Tables = dict[str, dict[str, dict[str, object]]]


def _seen_by_author(
    document: LedgerDoc, changes: list[bytes], guard: set[ObjectRef]
) -> tuple[_Tables, _Tables] | None:
    """The members and invites tables as the bundle's author saw them, and as its changes
    left them there — or ``None`` when nothing concurrent touched membership, so that the
    node's own tables before and after applying say the same.

    SECURITY.md R5: a change to membership is judged by what its author knew (its causal
    past), not by what else a node happens to hold — else an admin demoted at the same
    time as they promote someone is obeyed on nodes that heard of the promotion first and
    refused on the others.
    """
    own = {change_hash(c).hash for c in changes}
    deps = sorted({d for c in changes for d in change_hash(c).deps} - own)
    if deps == sorted(document.heads()):
        return None
    if not document.may_write(document.changes_since(deps), guard):
        return None
    then = document.as_of(deps)
    seen = {t: then.read_table(t) for t in ("members", "invites")}
    then.apply(changes)
    return seen, {t: then.read_table(t) for t in ("members", "invites")}


def _check_membership(
    node: Node,
    group_id: str,
    ledger: Ledger,
    before: _Tables,
    author: Author,
    seen_by_author: tuple[_Tables, _Tables] | None,
) -> None:
    """Judge a bundle that wrote to the members or invites table, then bring the view in
    line with the document (the bundle's own list of what it touched is not trusted)."""
    after = {t: ledger.doc.read_table(t) for t in ("members", "invites")}
    then, made = seen_by_author if seen_by_author is not None else (before, after)
    membership.check_change(
        then["members"],
        made["members"],
        author=author.member_id,
        joining=author.joining,
        invite=then["invites"].get(author.invite_id) if author.invite_id else None,
    )
    membership.check_invites(
        then["invites"],
        made["invites"],
        members=then["members"],
        author=author.member_id,
        claimed=author.invite_id,
        device=author.device,
    )
    # Read from ``after`` (just read from the document), and only where the view differs:
    # an entry stored again unchanged is a write for nothing.
    held = ledger.view.tables
    ledger.view.refresh_with(
        lambda table, entry: after[table].get(entry),
        [
            (t, e)
            for t in ("members", "invites")
            for e in set(before[t]) | set(after[t])
            if held[t].get(e) != after[t].get(e)
        ],
    )
    old_cutoffs = {c.key: c.cutoff for c in membership.cards(before["members"])}
    for card in membership.cards(after["members"]):
        if card.cutoff is None or old_cutoffs.get(card.key) == card.cutoff:
            continue
        through = counted_through(node, group_id, ledger, card.key, card.cutoff)
        if node.feeds.head(group_id, card.key)[0] > through:
            raise _Flip(card.key, through)


def _changes_membership(node: Node, group_id: str, inner: Inner | None) -> bool:
    """Whether a bundle writes to the members or invites table."""
    if inner is None or inner.kind != "content":
        return False
    document = node.ledger(group_id).doc
    guard = document.objects_under("members") | document.objects_under("invites")
    return document.may_write(
        [c for name, c, _ in decode_changes(inner.payload) if name == LIVE], guard
    )


def _rejudge_or_keep(node: Node, group_id: str) -> None:
    """:func:`_rejudge`, or, if that fails, everything as it was (logged)."""
    try:
        with node.store.savepoint():
            _rejudge(node, group_id)
    except HearthError as exc:
        node.unload(group_id)
        log.warning("could not judge the group's bundles again: %s", exc)


def _rejudge(node: Node, group_id: str) -> None:
    """Judge every bundle of the group this node holds again, from the start (inside a
    write): SECURITY.md R12 — when removals compete, which of them count must not depend
    on the order a node heard of them.

    Called when a removal met another one: a removal whose author was removed before it
    was taken out (so what it had voided may count after all), or a removal arriving past
    its author's cutoff. The bundles go through the same checks, in the order
    :func:`_retry_waiting` takes them (by author, then seq, round after round), which
    depends only on which bundles are held; when a removal in that order voids another
    one, what that one had voided is opened again. What snapshots cover stays as it is.
    Costly (every bundle again), and rare.
    """
    caught = node.feeds.equivocations(group_id)
    covered: dict[bytes, int] = {}
    dropped: set[bytes] = set()
    for stored in node.feeds.all(group_id):
        if stored.author not in covered:
            covered[stored.author] = node.feeds.covered_seq(group_id, stored.author)
        inner = opened(node, stored)
        if stored.seq <= covered[stored.author] or inner is None:
            continue
        if stored.seq > caught.get(stored.author, stored.seq):
            continue  # past what a device caught signing twice can write: out whatever happens
        dropped |= change_ids(inner)
        if inner.kind == "epoch":
            node.feeds.rejudge_epoch(group_id, epoch_of(group_id, inner))
        node.feeds.set_state(stored.id, WAITING)
    node.rebuild_without(group_id, dropped)
    node.store.run("DELETE FROM orphaned_changes WHERE group_id = ?", (group_id,))
    for stored in node.feeds.invalid(group_id):  # a device caught signing twice stays out
        if (inner := opened(node, stored)) is not None:
            orphan(node, group_id, change_ids(inner))
    for inner in second_bundles(node, group_id):  # and so does its proof's other bundle
        orphan(node, group_id, change_ids(inner))
    refused_again = False
    for _ in range(_MAX_FLIPS):
        try:
            applied = _retry_waiting(node, group_id)
        except _Flip as flip:  # the removal goes in on the next round
            take_out(node, group_id, flip.device, flip.cutoff, told=False)
            continue
        if _reopen(node, group_id):
            continue
        refused = node.feeds.refused(group_id)
        if not refused or (refused_again and not applied):
            return
        # What was refused on the way may count now: an admin's new key judged before the
        # bundle that made them an admin (the order is by author, not by cause).
        refused_again = True
        for stored in refused:
            node.feeds.set_state(stored.id, WAITING)
    raise ProtocolError("bundles that keep changing who is in the group")


def _reopen(node: Node, group_id: str) -> int:
    """Let bundles no longer past a cutoff be judged again (their changes too); return
    how many."""
    reopened = 0
    for stored in node.feeds.invalid(group_id):
        inner = opened(node, stored)
        if inner is not None and not past_cutoff(node, group_id, stored):
            unorphan(node, group_id, change_ids(inner))
            node.feeds.set_state(stored.id, WAITING)
            reopened += 1
    return reopened


def _retry_waiting(node: Node, group_id: str) -> int:
    """Apply waiting bundles that can now go; return how many did."""
    applied = 0
    progress = True
    while progress:
        progress = False
        for stored in node.feeds.waiting(group_id):
            if past_cutoff(node, group_id, stored):
                if (voided := opened(node, stored)) is not None:
                    not_counted(node, group_id, voided)
                node.feeds.set_state(stored.id, INVALID)  # kept: the removal may yet not count
                progress = True
                continue
            head_seq, head_id = node.feeds.head(group_id, stored.author)
            if stored.seq != head_seq + 1 or stored.prev != head_id:
                continue
            inner = opened(node, stored)
            if inner is None:
                continue
            try:
                with node.store.savepoint():
                    _apply(node, group_id, inner, stored.id)
            except _Wait:
                continue
            except HearthError as exc:
                log.warning("refusing a waiting bundle: %s", exc)
                if isinstance(exc, NotCounted):
                    not_counted(node, group_id, inner)
                if isinstance(exc, SecondClaim):
                    _refuse_joiner(node, group_id, stored.author, exc.name)
                    progress = True
                    continue
                # Kept, not dropped: if it is this device's own, its seq must not be used
                # again (that would look like a broken device to everyone else).
                node.feeds.set_state(stored.id, REFUSED)
                continue
            node.feeds.mark_applied(stored.id)
            applied += 1
            progress = True
    return applied
