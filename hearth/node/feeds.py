"""A node's feeds: its groups' epoch keys and every bundle it holds, in its store.

Each device writes one feed per group: bundles numbered 1, 2, 3 … each naming the id of
the one before. This module turns local edits into the next bundle of this device's feed,
keeps bundles that arrive, and answers what a relay or peer is missing. Deciding whether
an arrived bundle may be applied is the node's job (it needs the ledger).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

__all__ = ["APPLIED", "INVALID", "REFUSED", "WAITING", "Feeds", "StoredBundle", "epoch_id_for"]

APPLIED = "applied"
WAITING = "waiting"
INVALID = "invalid"  # applied once, then made invalid by a removal that arrived later (R8)
REFUSED = "refused"  # waited, then failed a check: kept (its seq is taken), never counted
_OPEN_ONLY = -1  # epochs.eligible of an epoch whose op is not judged yet


def epoch_id_for(group_id: bytes, number: int, creator: bytes) -> bytes:
    """The id of an epoch: SHA-256 of its (encoded) epoch op."""
    return hashlib.sha256(codec.encode(["epoch", group_id, number, creator])).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredBundle:
    """A bundle as the node keeps it."""

    id: bytes
    group_id: str
    author: bytes
    seq: int
    prev: bytes
    envelope: bytes
    state: str


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
        state = _OPEN_ONLY if eligible is None else int(eligible)
        self.store.run(
            "INSERT INTO epochs(group_id, epoch_id, number, secret, excluded, eligible, given) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(group_id, epoch_id) DO UPDATE SET "
            "excluded = CASE WHEN excluded.excluded = '[]' THEN epochs.excluded "
            "ELSE excluded.excluded END, eligible = CASE "  # -1: _OPEN_ONLY
            "WHEN excluded.eligible = -1 THEN epochs.eligible "
            "WHEN epochs.eligible = -1 THEN excluded.eligible "
            "ELSE MIN(epochs.eligible, excluded.eligible) END, "
            "given = COALESCE(excluded.given, epochs.given)",
            (
                group_id,
                keys.epoch_id,
                number,
                keys.secret,
                _hex_list(excluded),
                state,
                None if given is None else _hex_list(given),
            ),
        )
        self._topics = None

    def make_ineligible(self, group_id: str, epoch_id: bytes) -> None:
        """An epoch's op turned out not to count: seal nothing more under it (in a write)."""
        self.store.run(
            "UPDATE epochs SET eligible = 0 WHERE group_id = ? AND epoch_id = ?",
            (group_id, epoch_id),
        )

    def excluded(
        self, group_id: str, *, counted_only: bool = True
    ) -> dict[bytes, frozenset[bytes]]:
        """Epoch id -> the devices its creator left out, for every eligible epoch held
        (every epoch held, ``counted_only`` false)."""
        rows = self.store.query(
            "SELECT epoch_id, excluded FROM epochs WHERE group_id = ? AND (eligible = 1 OR NOT ?)",
            (group_id, counted_only),
        )
        return {bytes(e): frozenset(bytes.fromhex(d) for d in json.loads(str(x))) for e, x in rows}

    def epochs(self, group_id: str) -> list[tuple[int, EpochKeys]]:
        """Every epoch of a group this node holds, oldest first."""
        gid = bytes.fromhex(group_id)
        rows = self.store.query(
            "SELECT number, epoch_id, secret FROM epochs WHERE group_id = ? "
            "ORDER BY number, epoch_id",
            (group_id,),
        )
        return [
            (int(n), EpochKeys(group_id=gid, epoch_id=bytes(e), secret=bytes(s)))
            for n, e, s in rows
        ]

    def given(self, group_id: str, epoch_id: bytes) -> frozenset[bytes] | None:
        """The devices an epoch held here was sealed to, if known."""
        rows = self.store.query(
            "SELECT given FROM epochs WHERE group_id = ? AND epoch_id = ?", (group_id, epoch_id)
        )
        if not rows or rows[0][0] is None:
            return None
        return frozenset(bytes.fromhex(d) for d in json.loads(str(rows[0][0])))

    def wrote_under(self, group_id: str, device: bytes, topic: bytes) -> bool:
        """Whether a device sealed any bundle held here under the epoch of ``topic``."""
        return bool(
            self.store.query(
                "SELECT 1 FROM bundles WHERE group_id = ? AND author = ? AND topic = ? LIMIT 1",
                (group_id, device, topic),
            )
        )

    def left_out_of(self, group_id: str, device: bytes) -> list[Carried]:
        """Every epoch held here that ``device`` was not given — its creator left it out,
        or it joined while the epoch was made — to hand on to it now that it is in the
        group. Oldest first."""
        rows = self.store.query(
            "SELECT number, epoch_id, secret, excluded, given FROM epochs WHERE group_id = ? "
            "ORDER BY number, epoch_id",
            (group_id,),
        )
        found = []
        for number, epoch_id, secret, listed, given in rows:
            excluded = tuple(bytes.fromhex(d) for d in json.loads(str(listed)))
            not_given = given is not None and device.hex() not in json.loads(str(given))
            if device in excluded or not_given:
                found.append(
                    Carried(
                        number=int(number),
                        epoch_id=bytes(epoch_id),
                        secret=bytes(secret),
                        excluded=excluded,
                    )
                )
        return found

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
                for (group_id,) in self.store.query("SELECT DISTINCT group_id FROM epochs")
                for _, keys in self.epochs(str(group_id))
            }
        return self._topics.get(topic)

    # --- this device's feed -----------------------------------------------------------

    def head(self, group_id: str, author: bytes) -> tuple[int, bytes]:
        """(seq, id) of the newest applied bundle of an author's feed, or (0, b"").

        A snapshot taken in counts: the bundles it covers need not be held. Those held are
        judged like any other — a covered head taken out since (a late removal, R8) is no
        longer the feed's head, or what R7 lets count again could never follow it.
        """
        rows = self.store.query(
            "SELECT seq, id FROM bundles WHERE group_id = ? AND author = ? AND state = ? "
            "UNION ALL SELECT seq, id FROM covered WHERE group_id = ? AND author = ? "
            "AND NOT EXISTS (SELECT 1 FROM bundles WHERE bundles.id = covered.id "
            "AND bundles.state != ?) "
            "ORDER BY seq DESC LIMIT 1",
            (group_id, author, APPLIED, group_id, author, APPLIED),
        )
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else (0, b"")

    def heads(self, group_id: str) -> list[tuple[bytes, int, bytes]]:
        """(author, seq, id) of every feed's newest applied bundle in a group."""
        authors = self.store.query(
            "SELECT DISTINCT author FROM bundles WHERE group_id = ? AND state = ? "
            "UNION SELECT author FROM covered WHERE group_id = ?",
            (group_id, APPLIED, group_id),
        )
        return sorted((bytes(a), *self.head(group_id, bytes(a))) for (a,) in authors)

    def cover(self, group_id: str, heads: Sequence[tuple[bytes, int, bytes]]) -> None:
        """Take in a snapshot's feed heads (inside a write)."""
        for author, seq, bundle_id in heads:
            if seq > self.head(group_id, author)[0]:
                self.store.run(
                    "INSERT OR REPLACE INTO covered(group_id, author, seq, id) VALUES (?, ?, ?, ?)",
                    (group_id, author, seq, bundle_id),
                )

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
        rows = self.store.query(
            "SELECT COUNT(*) FROM bundles WHERE group_id = ? AND state = ?", (group_id, APPLIED)
        )
        return int(rows[0][0])

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
        rows = self.store.query(
            "SELECT 1 FROM bundles WHERE group_id = ? AND author = ? AND state = ? LIMIT 1",
            (group_id, self.device.public, WAITING),
        )
        return bool(rows)

    def own_waiting(self, group_id: str) -> list[Inner]:
        """The insides of this device's own bundles in the group that wait to be judged,
        in feed order (none but in rare cases: a newcomer's claim judged again before its
        invite is here, R12). Their changes are out of this node's documents until they
        count, but their places in this device's Automerge sequence are taken."""
        rows = self.store.query(
            "SELECT envelope FROM bundles WHERE group_id = ? AND author = ? AND state = ? "
            "ORDER BY seq",
            (group_id, self.device.public, WAITING),
        )
        found = []
        for (data,) in rows:
            envelope = parse_envelope(bytes(data))
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
        rows = self.store.query(
            "SELECT seq, id FROM bundles WHERE group_id = ? AND author = ? "
            "ORDER BY seq DESC LIMIT 1",
            (group_id, me),
        )
        newest = (int(rows[0][0]), bytes(rows[0][1])) if rows else (0, b"")
        return max(newest, self.head(group_id, me))

    def keep(self, group_id: str, envelope: Envelope, inner: Inner, state: str) -> None:
        """Store a bundle (inside a write)."""
        self.store.run(
            f"INSERT OR IGNORE INTO {_BUNDLE_ROW}",
            _bundle_row(group_id, envelope, inner, state, self.clock.now_ms()),
        )

    def keep_applied(self, group_id: str, bundles: Sequence[tuple[Envelope, Inner]]) -> None:
        """Store many bundles as applied, and mark applied those held already (inside a
        write): the bundles a snapshot covers, once it is checked against them (R13)."""
        now = self.clock.now_ms()
        self.store.run_many(
            f"INSERT INTO {_BUNDLE_ROW} ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            [_bundle_row(group_id, envelope, inner, APPLIED, now) for envelope, inner in bundles],
        )

    def invalidate_after(self, group_id: str, author: bytes, cutoff: int) -> list[StoredBundle]:
        """Mark a removed device's bundles past its cutoff invalid; return them (in a write)."""
        rows = self.store.query(
            "SELECT id, group_id, author, seq, prev, envelope, state FROM bundles "
            "WHERE group_id = ? AND author = ? AND seq > ? AND state != ?",
            (group_id, author, cutoff, INVALID),
        )
        self.store.run(
            "UPDATE bundles SET state = ? WHERE group_id = ? AND author = ? AND seq > ?",
            (INVALID, group_id, author, cutoff),
        )
        return [_row(r) for r in rows]

    def keep_equivocation(self, group_id: str, envelope: Envelope, inner: Inner) -> None:
        """Keep the second of two bundles a device signed for one seq (inside a write)."""
        self.store.run(
            "INSERT OR IGNORE INTO equivocations(group_id, author, seq, id, topic, envelope) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (group_id, inner.author, inner.seq, envelope.id, envelope.topic, envelope.encode()),
        )

    def holds_proof(self, bundle_id: bytes) -> bool:
        """Whether a bundle is held here as one of two a device signed for one seq."""
        return bool(
            self.store.query("SELECT 1 FROM equivocations WHERE id = ? LIMIT 1", (bundle_id,))
        )

    def equivocations(self, group_id: str) -> dict[bytes, int]:
        """Device -> the last seq of its feed that counts, for devices proved to have
        signed two bundles for one seq (R4)."""
        rows = self.store.query(
            "SELECT author, MIN(seq) FROM equivocations WHERE group_id = ? GROUP BY author",
            (group_id,),
        )
        return {bytes(a): int(s) - 1 for a, s in rows}

    def covered_seq(self, group_id: str, author: bytes) -> int:
        """The last seq of an author's feed a snapshot taken in here covers (0: none)."""
        rows = self.store.query(
            "SELECT MAX(seq) FROM covered WHERE group_id = ? AND author = ?", (group_id, author)
        )
        return int(rows[0][0] or 0)

    def invalid(self, group_id: str) -> list[StoredBundle]:
        """Bundles held but not counted (past a cutoff), in feed order."""
        return self._in_state(group_id, INVALID)

    def set_state(self, bundle_id: bytes, state: str) -> None:
        """Judge a held bundle again: it waits, counts, or not (inside a write)."""
        self.store.run("UPDATE bundles SET state = ? WHERE id = ?", (state, bundle_id))

    def rejudge_epoch(self, group_id: str, epoch_id: bytes) -> None:
        """An epoch's op is to be judged again (inside a write): open only until it is."""
        self.store.run(
            "UPDATE epochs SET eligible = ? WHERE group_id = ? AND epoch_id = ?",
            (_OPEN_ONLY, group_id, epoch_id),
        )

    def mark_applied(self, bundle_id: bytes) -> None:
        """A waiting bundle has now been applied (inside a write)."""
        self.set_state(bundle_id, APPLIED)

    # --- what we hold ------------------------------------------------------------------

    def get(self, bundle_id: bytes) -> StoredBundle | None:
        """A stored bundle by id."""
        rows = self.store.query(
            "SELECT id, group_id, author, seq, prev, envelope, state FROM bundles WHERE id = ?",
            (bundle_id,),
        )
        return _row(rows[0]) if rows else None

    def at(self, group_id: str, author: bytes, seq: int) -> StoredBundle | None:
        """The bundle an author's feed holds at a sequence number, if any."""
        rows = self.store.query(
            "SELECT id, group_id, author, seq, prev, envelope, state FROM bundles "
            "WHERE group_id = ? AND author = ? AND seq = ?",
            (group_id, author, seq),
        )
        return _row(rows[0]) if rows else None

    def refused(self, group_id: str) -> list[StoredBundle]:
        """Bundles that waited, then failed a check, in feed order."""
        return self._in_state(group_id, REFUSED)

    def waiting(self, group_id: str) -> list[StoredBundle]:
        """Bundles held back until an earlier one of their feed arrives."""
        return self._in_state(group_id, WAITING)

    def _in_state(self, group_id: str, state: str) -> list[StoredBundle]:
        rows = self.store.query(
            "SELECT id, group_id, author, seq, prev, envelope, state FROM bundles "
            "WHERE group_id = ? AND state = ? ORDER BY author, seq",
            (group_id, state),
        )
        return [_row(r) for r in rows]

    def all(self, group_id: str | None = None) -> list[StoredBundle]:
        """Every bundle (of one group), in a stable order: by author, then seq."""
        rows = self.store.query(
            "SELECT id, group_id, author, seq, prev, envelope, state FROM bundles "
            "WHERE ? IS NULL OR group_id = ? ORDER BY group_id, author, seq",
            (group_id, group_id),
        )
        return [_row(r) for r in rows]

    def lacking(self, topic: bytes, have: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
        """(id, envelope) of the bundles of a topic beyond a peer's version vector — also
        those that do not count: the peer judges them itself, and without them it could
        not tell that what builds on them will never be complete (R8)."""
        rows = self.store.query(
            "SELECT id, author, seq, envelope FROM bundles WHERE topic = ? ORDER BY author, seq",
            (topic,),
        )
        return [
            (bytes(bid), bytes(env))
            for bid, author, seq, env in rows
            if int(seq) > have.get(bytes(author), 0)
        ] + self.proofs(topic)

    def proofs(self, topic: bytes) -> list[tuple[bytes, bytes]]:
        """(id, envelope) of the second bundles of devices that equivocated on a topic:
        passed on with the rest, so every node holding both judges alike (R4)."""
        rows = self.store.query("SELECT id, envelope FROM equivocations WHERE topic = ?", (topic,))
        return [(bytes(bid), bytes(env)) for bid, env in rows]

    def newest_arrival(self) -> int:
        """A mark for :meth:`arrivals`: bundles stored after now come after it."""
        rows = self.store.query("SELECT MAX(rowid) FROM bundles")
        return int(rows[0][0] or 0)

    def arrivals(self, after: int) -> tuple[list[tuple[bytes, bytes, bytes]], int]:
        """(id, topic, envelope) of bundles stored since a mark — written here, by another
        process on this home, or received — and the new mark."""
        rows = self.store.query(
            "SELECT rowid, id, topic, envelope FROM bundles WHERE rowid > ? ORDER BY rowid",
            (after,),
        )
        mark = int(rows[-1][0]) if rows else after
        return [(bytes(i), bytes(t), bytes(e)) for _, i, t, e in rows], mark

    def written_since(self, after: int, author: bytes) -> list[tuple[bytes, bytes, bytes]]:
        """(id, topic, envelope) of the bundles one device wrote since a mark of
        :meth:`arrivals`."""
        rows = self.store.query(
            "SELECT id, topic, envelope FROM bundles WHERE rowid > ? AND author = ? ORDER BY rowid",
            (after, author),
        )
        return [(bytes(i), bytes(t), bytes(e)) for i, t, e in rows]

    def version_vector(self, group_id: str) -> dict[str, int]:
        """Device (hex) -> highest contiguous applied seq, for one group."""
        rows = self.store.query(
            "SELECT author, MAX(seq) FROM bundles WHERE group_id = ? AND state = ? GROUP BY author",
            (group_id, APPLIED),
        )
        return {bytes(a).hex(): int(s) for a, s in rows}


def _hex_list(keys: Sequence[bytes]) -> str:
    return json.dumps(sorted(k.hex() for k in keys))


_BUNDLE_ROW = (
    "bundles(id, group_id, topic, author, seq, prev, envelope, state, arrived) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _bundle_row(
    group_id: str, envelope: Envelope, inner: Inner, state: str, now: int
) -> tuple[object, ...]:
    """A bundle's values for :data:`_BUNDLE_ROW`."""
    return (
        envelope.id,
        group_id,
        envelope.topic,
        inner.author,
        inner.seq,
        inner.prev,
        envelope.encode(),
        state,
        now,
    )


def _row(row: Any) -> StoredBundle:
    bid, group_id, author, seq, prev, envelope, state = row
    return StoredBundle(
        id=bytes(bid),
        group_id=str(group_id),
        author=bytes(author),
        seq=int(seq),
        prev=bytes(prev),
        envelope=bytes(envelope),
        state=str(state),
    )
