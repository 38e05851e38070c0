"""A node's feeds: its groups' epoch keys and every bundle it holds, in its store.

Each device writes one feed per group: bundles numbered 1, 2, 3 … each naming the id of
the one before. This module turns local edits into the next bundle of this device's feed,
keeps bundles that arrive, and answers what a relay or peer is missing. Deciding whether
an arrived bundle may be applied is the node's job (it needs the ledger).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence

from hearth.clock import Clock
from hearth.crypto import RandomBytes, SigningKey
from hearth.errors import ProtocolError
from hearth.protocol import codec
from hearth.protocol.bundle import (
    Envelope,
    EpochKeys,
    Inner,
    encode_changes,
    open_envelope,
    parse_envelope,
    seal_bundle,
)
from hearth.protocol.epoch_op import Carried, preferred
from hearth.store import Store
from hearth.store.feed_rows import (
    APPLIED,
    EPOCH_OPEN_ONLY,
    INVALID,
    REFUSED,
    WAITING,
    NewBundle,
    StoredBundle,
)

__all__ = ["APPLIED", "INVALID", "REFUSED", "WAITING", "Feeds", "StoredBundle", "epoch_id_for"]


def epoch_id_for(group_id: bytes, number: int, creator: bytes) -> bytes:
    """The id of an epoch: SHA-256 of its (encoded) epoch op."""
    return hashlib.sha256(codec.encode(["epoch", group_id, number, creator])).digest()


class Feeds:
    """Epoch keys and bundles of every group of one node."""

    def __init__(
        self,
        store: Store,
        device: SigningKey,
        clock: Clock,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        self.store = store
        self.device = device
        self.clock = clock
        self.random_bytes = random_bytes
        self._topics: dict[bytes, tuple[str, EpochKeys]] | None = None

    # --- epochs ----------------------------------------------------------------------

    def new_epoch(self, group_id: str, number: int = 0) -> EpochKeys:
        """Create and keep a fresh epoch secret for a group (inside a write)."""
        gid = bytes.fromhex(group_id)
        keys = EpochKeys(
            group_id=gid,
            epoch_id=epoch_id_for(gid, number, self.device.public),
            secret=self.random_bytes(32),
        )
        self.add_epoch(group_id, keys, number)
        return keys

    def add_epoch(
        self,
        group_id: str,
        keys: EpochKeys,
        number: int,
        excluded: Sequence[bytes] = (),
        *,
        eligible: bool | None = True,
        given: Sequence[bytes] | None = None,
    ) -> None:
        """Keep an epoch secret (inside a write), with the devices its creator left out
        and, where known, those it was sealed to (``given``).

        ``eligible``: its op counts (``True``), does not (``False``: the key only opens
        bundles, nothing is sealed under it), or is not judged yet (``None``: a key from an
        op still waiting its turn, or handed on in another op — open only, until its own op
        is judged). A judged verdict is never turned back by a later call except
        :meth:`rejudge_epoch`."""
        self.store.keep_epoch(
            group_id,
            keys.epoch_id,
            number,
            keys.secret,
            excluded=excluded,
            eligible=EPOCH_OPEN_ONLY if eligible is None else int(eligible),
            given=given,
        )
        self._topics = None

    def make_ineligible(self, group_id: str, epoch_id: bytes) -> None:
        """An epoch's op turned out not to count: seal nothing more under it (in a write)."""
        self.store.make_epoch_ineligible(group_id, epoch_id)

    def excluded(
        self, group_id: str, *, counted_only: bool = True
    ) -> dict[bytes, frozenset[bytes]]:
        """Epoch id -> the devices its creator left out, for every eligible epoch held
        (every epoch held, ``counted_only`` false)."""
        return self.store.epoch_exclusions(group_id, counted_only=counted_only)

    def epochs(self, group_id: str) -> list[tuple[int, EpochKeys]]:
        """Every epoch of a group this node holds, oldest first."""
        gid = bytes.fromhex(group_id)
        return [
            (n, EpochKeys(group_id=gid, epoch_id=e, secret=s))
            for n, e, s in self.store.epoch_secrets(group_id)
        ]

    def given(self, group_id: str, epoch_id: bytes) -> frozenset[bytes] | None:
        """The devices an epoch held here was sealed to, if known."""
        return self.store.epoch_given(group_id, epoch_id)

    def wrote_under(self, group_id: str, device: bytes, topic: bytes) -> bool:
        """Whether a device sealed any bundle held here under the epoch of ``topic``."""
        return self.store.wrote_under(group_id, device, topic)

    def left_out_of(self, group_id: str, device: bytes) -> list[Carried]:
        """Every epoch held here that ``device`` was not given — its creator left it out,
        or it joined while the epoch was made — to hand on to it now that it is in the
        group. Oldest first."""
        return [
            Carried(
                number=epoch.number,
                epoch_id=epoch.epoch_id,
                secret=epoch.secret,
                excluded=epoch.excluded,
            )
            for epoch in self.store.epochs_with_recipients(group_id)
            if device in epoch.excluded or (epoch.given is not None and device not in epoch.given)
        ]

    def current_keys(self, group_id: str) -> EpochKeys:
        """The epoch a group's new bundles are sealed under (see :func:`preferred`)."""
        return self.current(group_id)[1]

    def current(self, group_id: str) -> tuple[int, EpochKeys, frozenset[bytes]]:
        """(number, keys, excluded devices) of the epoch new bundles are sealed under."""
        excluded = self.excluded(group_id)
        found = [
            (n, k, excluded[k.epoch_id]) for n, k in self.epochs(group_id) if k.epoch_id in excluded
        ]
        return found[preferred([(n, k.epoch_id, x) for n, k, x in found])]

    def keys_for_topic(self, topic: bytes) -> tuple[str, EpochKeys] | None:
        """Which group and epoch a topic belongs to, if it is one of ours."""
        if self._topics is None or topic not in self._topics:
            # (Re)read: another process on this home may have joined a group meanwhile.
            self._topics = {
                keys.topic: (str(group_id), keys)
                for group_id in self.store.groups_with_epochs()
                for _, keys in self.epochs(group_id)
            }
        return self._topics.get(topic)

    # --- this device's feed -----------------------------------------------------------

    def head(self, group_id: str, author: bytes) -> tuple[int, bytes]:
        """(seq, id) of the newest applied bundle of an author's feed, or (0, b"").

        A snapshot taken in counts: the bundles it covers need not be held. Those held are
        judged like any other — a covered head taken out since (a late removal, R8) is no
        longer the feed's head, or what R7 lets count again could never follow it.
        """
        return self.store.feed_head(group_id, author) or (0, b"")

    def heads(self, group_id: str) -> list[tuple[bytes, int, bytes]]:
        """(author, seq, id) of every feed's newest applied bundle in a group."""
        authors = self.store.feed_authors(group_id)
        return sorted((a, *self.head(group_id, a)) for a in authors)

    def cover(self, group_id: str, heads: Sequence[tuple[bytes, int, bytes]]) -> None:
        """Take in a snapshot's feed heads (inside a write)."""
        for author, seq, bundle_id in heads:
            if seq > self.head(group_id, author)[0]:
                self.store.cover_feed(group_id, author, seq, bundle_id)

    def seal_snapshot(self, group_id: str, payload: bytes) -> Envelope:
        """A snapshot bundle of this device (outside its feed: seq 0)."""
        keys = self.current_keys(group_id)
        inner = Inner(
            kind="snapshot",
            group_id=keys.group_id,
            epoch_id=keys.epoch_id,
            author=self.device.public,
            seq=0,
            prev=b"",
            auth_heads=(),
            created_at=self.clock.now_ms(),
            payload=payload,
        )
        return seal_bundle(inner, keys=keys, device=self.device, salt=self.random_bytes(32))

    def applied_count(self, group_id: str) -> int:
        """How many bundles of a group this node has applied."""
        return self.store.applied_count(group_id)

    def seal_local(
        self,
        group_id: str,
        changes: Sequence[tuple[str, bytes, Sequence[tuple[str, str]]]],
        *,
        auth_heads: Sequence[bytes] = (),
        claim: bytes = b"",
    ) -> Envelope:
        """Make local changes the next bundle of this device's feed and keep it (in a write)."""
        return self._seal_next(
            group_id,
            "content",
            encode_changes(changes),
            self.current_keys(group_id),
            auth_heads=auth_heads,
            claim=claim,
        )

    def seal_epoch_op(
        self, group_id: str, payload: bytes, keys: EpochKeys, auth_heads: Sequence[bytes]
    ) -> Envelope:
        """Make an epoch op the next bundle of this device's feed, sealed under ``keys``
        (the epoch it replaces, so every member can read it), and keep it (in a write).
        ``auth_heads``: the ledger's heads as its author saw them, where it is judged."""
        return self._seal_next(group_id, "epoch", payload, keys, auth_heads=auth_heads)

    def seal_hand_on(self, group_id: str, payload: bytes, keys: EpochKeys) -> Envelope:
        """Make a hand-on of older keys the next bundle of this device's feed, sealed under
        ``keys`` (an epoch its recipients hold), and keep it (in a write)."""
        return self._seal_next(group_id, "keys", payload, keys)

    def _seal_next(
        self,
        group_id: str,
        kind: str,
        payload: bytes,
        keys: EpochKeys,
        *,
        auth_heads: Sequence[bytes] = (),
        claim: bytes = b"",
    ) -> Envelope:
        seq, prev = self._last_written(group_id)
        inner = Inner(
            kind=kind,
            group_id=keys.group_id,
            epoch_id=keys.epoch_id,
            author=self.device.public,
            seq=seq + 1,
            prev=prev,
            auth_heads=tuple(auth_heads),
            created_at=self.clock.now_ms(),
            payload=payload,
            claim=claim,
        )
        envelope = seal_bundle(inner, keys=keys, device=self.device, salt=self.random_bytes(32))
        # Behind a bundle of its own that waits (judged again, R12: a newcomer's claim
        # waiting for the invite it claims), it waits too: counted now, it would become
        # the feed's head, and the one before it could never follow (nor count here).
        state = WAITING if self._own_waiting(group_id) else APPLIED
        self.keep(group_id, envelope, inner, state)
        return envelope

    def _own_waiting(self, group_id: str) -> bool:
        """Whether a bundle of this device's feed in the group waits to be judged."""
        return self.store.has_waiting(group_id, self.device.public)

    def own_waiting(self, group_id: str) -> list[Inner]:
        """The insides of this device's own bundles in the group that wait to be judged,
        in feed order (none but in rare cases: a newcomer's claim judged again before its
        invite is here, R12). Their changes are out of this node's documents until they
        count, but their places in this device's Automerge sequence are taken."""
        found = []
        for data in self.store.waiting_envelopes(group_id, self.device.public):
            envelope = parse_envelope(data)
            keys = self.keys_for_topic(envelope.topic)
            if keys is None:
                continue
            try:
                found.append(open_envelope(envelope, keys[1]))
            except ProtocolError:
                continue  # not as this device sealed it: nothing of it counts
        return found

    def _last_written(self, group_id: str) -> tuple[int, bytes]:
        """(seq, id) of this device's newest bundle whatever became of it: one of its own
        waiting or not counted must never see its seq used again (two bundles at one seq
        are what a broken device makes, R4)."""
        me = self.device.public
        newest = self.store.newest_bundle_of(group_id, me) or (0, b"")
        return max(newest, self.head(group_id, me))

    def keep(self, group_id: str, envelope: Envelope, inner: Inner, state: str) -> None:
        """Store a bundle (inside a write)."""
        self.store.keep_bundle(_new_bundle(group_id, envelope, inner, state, self.clock.now_ms()))

    def keep_applied(self, group_id: str, bundles: Sequence[tuple[Envelope, Inner]]) -> None:
        """Store many bundles as applied, and mark applied those held already (inside a
        write): the bundles a snapshot covers, once it is checked against them (R13)."""
        now = self.clock.now_ms()
        self.store.keep_or_restate_bundles(
            [_new_bundle(group_id, envelope, inner, APPLIED, now) for envelope, inner in bundles]
        )

    def invalidate_after(self, group_id: str, author: bytes, cutoff: int) -> list[StoredBundle]:
        """Mark a removed device's bundles past its cutoff invalid; return them (in a write)."""
        return self.store.invalidate_feed_after(group_id, author, cutoff)

    def keep_equivocation(self, group_id: str, envelope: Envelope, inner: Inner) -> None:
        """Keep the second of two bundles a device signed for one seq (inside a write)."""
        self.store.keep_equivocation(
            group_id, inner.author, inner.seq, envelope.id, envelope.topic, envelope.encode()
        )

    def holds_proof(self, bundle_id: bytes) -> bool:
        """Whether a bundle is held here as one of two a device signed for one seq."""
        return self.store.holds_equivocation(bundle_id)

    def equivocations(self, group_id: str) -> dict[bytes, int]:
        """Device -> the last seq of its feed that counts, for devices proved to have
        signed two bundles for one seq (R4)."""
        firsts = self.store.first_equivocated_seqs(group_id)
        return {author: seq - 1 for author, seq in firsts.items()}

    def covered_seq(self, group_id: str, author: bytes) -> int:
        """The last seq of an author's feed a snapshot taken in here covers (0: none)."""
        return self.store.covered_seq(group_id, author)

    def invalid(self, group_id: str) -> list[StoredBundle]:
        """Bundles held but not counted (past a cutoff), in feed order."""
        return self._in_state(group_id, INVALID)

    def set_state(self, bundle_id: bytes, state: str) -> None:
        """Judge a held bundle again: it waits, counts, or not (inside a write)."""
        self.store.set_bundle_state(bundle_id, state)

    def rejudge_epoch(self, group_id: str, epoch_id: bytes) -> None:
        """An epoch's op is to be judged again (inside a write): open only until it is."""
        self.store.make_epoch_open_only(group_id, epoch_id)

    def mark_applied(self, bundle_id: bytes) -> None:
        """A waiting bundle has now been applied (inside a write)."""
        self.set_state(bundle_id, APPLIED)

    # --- what we hold ------------------------------------------------------------------

    def get(self, bundle_id: bytes) -> StoredBundle | None:
        """A stored bundle by id."""
        return self.store.bundle(bundle_id)

    def at(self, group_id: str, author: bytes, seq: int) -> StoredBundle | None:
        """The bundle an author's feed holds at a sequence number, if any."""
        return self.store.bundle_at(group_id, author, seq)

    def refused(self, group_id: str) -> list[StoredBundle]:
        """Bundles that waited, then failed a check, in feed order."""
        return self._in_state(group_id, REFUSED)

    def waiting(self, group_id: str) -> list[StoredBundle]:
        """Bundles held back until an earlier one of their feed arrives."""
        return self._in_state(group_id, WAITING)

    def _in_state(self, group_id: str, state: str) -> list[StoredBundle]:
        return self.store.bundles_in_state(group_id, state)

    def all(self, group_id: str | None = None) -> list[StoredBundle]:
        """Every bundle (of one group), in a stable order: by author, then seq."""
        return self.store.all_bundles(group_id)

    def lacking(self, topic: bytes, have: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
        """(id, envelope) of the bundles of a topic beyond a peer's version vector — also
        those that do not count: the peer judges them itself, and without them it could
        not tell that what builds on them will never be complete (R8)."""
        return [
            (bid, env)
            for bid, author, seq, env in self.store.bundles_of_topic(topic)
            if seq > have.get(author, 0)
        ] + self.proofs(topic)

    def proofs(self, topic: bytes) -> list[tuple[bytes, bytes]]:
        """(id, envelope) of the second bundles of devices that equivocated on a topic:
        passed on with the rest, so every node holding both judges alike (R4)."""
        return self.store.equivocations_of_topic(topic)

    def newest_arrival(self) -> int:
        """A mark for :meth:`arrivals`: bundles stored after now come after it."""
        return self.store.newest_arrival()

    def arrivals(self, after: int) -> tuple[list[tuple[bytes, bytes, bytes]], int]:
        """(id, topic, envelope) of bundles stored since a mark — written here, by another
        process on this home, or received — and the new mark."""
        return self.store.arrivals_after(after)

    def written_since(self, after: int, author: bytes) -> list[tuple[bytes, bytes, bytes]]:
        """(id, topic, envelope) of the bundles one device wrote since a mark of
        :meth:`arrivals`."""
        return self.store.written_since(after, author)

    def version_vector(self, group_id: str) -> dict[str, int]:
        """Device (hex) -> highest contiguous applied seq, for one group."""
        vector = self.store.applied_version_vector(group_id)
        return {author.hex(): seq for author, seq in vector.items()}


def _new_bundle(group_id: str, envelope: Envelope, inner: Inner, state: str, now: int) -> NewBundle:
    """A bundle to keep, from its envelope and its inside."""
    return NewBundle(
        id=envelope.id,
        group_id=group_id,
        topic=envelope.topic,
        author=inner.author,
        seq=inner.seq,
        prev=inner.prev,
        envelope=envelope.encode(),
        state=state,
        arrived=now,
    )
