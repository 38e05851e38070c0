"""The store's part for feeds: epoch keys, held bundles, covered heads, equivocations.

``hearth/node/feeds.py`` decides what these mean; this module only keeps and finds them.
A bundle's state is one of :data:`APPLIED`, :data:`WAITING`, :data:`INVALID` and
:data:`REFUSED`; an epoch's ``eligible`` is 1 (its op counts), 0 (it does not) or
:data:`EPOCH_OPEN_ONLY` (not judged yet: its key only opens bundles).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hearth.store.statements import Statements

__all__ = [
    "APPLIED",
    "EPOCH_OPEN_ONLY",
    "INVALID",
    "REFUSED",
    "WAITING",
    "EpochRow",
    "FeedRows",
    "NewBundle",
    "StoredBundle",
]

APPLIED = "applied"
WAITING = "waiting"
INVALID = "invalid"  # applied once, then made invalid by a removal that arrived later (R8)
REFUSED = "refused"  # waited, then failed a check: kept (its seq is taken), never counted
EPOCH_OPEN_ONLY = -1  # epochs.eligible of an epoch whose op is not judged yet


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


@dataclass(frozen=True, slots=True, kw_only=True)
class NewBundle:
    """A bundle to keep: what its envelope and inside say, its state, when it arrived."""

    id: bytes
    group_id: str
    topic: bytes
    author: bytes
    seq: int
    prev: bytes
    envelope: bytes
    state: str
    arrived: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochRow:
    """An epoch held here, with whom its creator left out and (if known) sealed it to."""

    number: int
    epoch_id: bytes
    secret: bytes
    excluded: tuple[bytes, ...]
    given: frozenset[bytes] | None


_BUNDLE_ROW = (
    "bundles(id, group_id, topic, author, seq, prev, envelope, state, arrived) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BUNDLE_COLUMNS = "SELECT id, group_id, author, seq, prev, envelope, state FROM bundles "


def _hex_list(keys: Sequence[bytes]) -> str:
    return json.dumps(sorted(k.hex() for k in keys))


def _devices(listed: object) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(d) for d in json.loads(str(listed)))


def _values(bundle: NewBundle) -> tuple[object, ...]:
    return (
        bundle.id,
        bundle.group_id,
        bundle.topic,
        bundle.author,
        bundle.seq,
        bundle.prev,
        bundle.envelope,
        bundle.state,
        bundle.arrived,
    )


def _stored(row: Any) -> StoredBundle:
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


class FeedRows(Statements):
    """Epochs and bundles of every group of the node, as stored."""

    # --- epochs ----------------------------------------------------------------------

    def keep_epoch(
        self,
        group_id: str,
        epoch_id: bytes,
        number: int,
        secret: bytes,
        *,
        excluded: Sequence[bytes],
        eligible: int,
        given: Sequence[bytes] | None,
    ) -> None:
        """Keep an epoch's secret (inside a write). Kept already: a non-empty ``excluded``
        and a known ``given`` replace the stored ones; a judged ``eligible`` (0 or 1) is
        never turned back to 1 nor to :data:`EPOCH_OPEN_ONLY`."""
        self.run(
            "INSERT INTO epochs(group_id, epoch_id, number, secret, excluded, eligible, given) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(group_id, epoch_id) DO UPDATE SET "
            "excluded = CASE WHEN excluded.excluded = '[]' THEN epochs.excluded "
            "ELSE excluded.excluded END, eligible = CASE "  # -1: EPOCH_OPEN_ONLY
            "WHEN excluded.eligible = -1 THEN epochs.eligible "
            "WHEN epochs.eligible = -1 THEN excluded.eligible "
            "ELSE MIN(epochs.eligible, excluded.eligible) END, "
            "given = COALESCE(excluded.given, epochs.given)",
            (
                group_id,
                epoch_id,
                number,
                secret,
                _hex_list(excluded),
                eligible,
                None if given is None else _hex_list(given),
            ),
        )

    def make_epoch_ineligible(self, group_id: str, epoch_id: bytes) -> None:
        """An epoch's op does not count (inside a write)."""
        self.run(
            "UPDATE epochs SET eligible = 0 WHERE group_id = ? AND epoch_id = ?",
            (group_id, epoch_id),
        )

    def make_epoch_open_only(self, group_id: str, epoch_id: bytes) -> None:
        """An epoch's op is to be judged again: open only until it is (inside a write)."""
        self.run(
            "UPDATE epochs SET eligible = ? WHERE group_id = ? AND epoch_id = ?",
            (EPOCH_OPEN_ONLY, group_id, epoch_id),
        )

    def epoch_exclusions(
        self, group_id: str, *, counted_only: bool
    ) -> dict[bytes, frozenset[bytes]]:
        """Epoch id -> the devices its creator left out, for each epoch whose op counts
        (each epoch held, ``counted_only`` false)."""
        rows = self.query(
            "SELECT epoch_id, excluded FROM epochs WHERE group_id = ? AND (eligible = 1 OR NOT ?)",
            (group_id, counted_only),
        )
        return {bytes(e): frozenset(_devices(x)) for e, x in rows}

    def epoch_secrets(self, group_id: str) -> list[tuple[int, bytes, bytes]]:
        """(number, epoch id, secret) of each epoch of a group held, oldest first."""
        rows = self.query(
            "SELECT number, epoch_id, secret FROM epochs WHERE group_id = ? "
            "ORDER BY number, epoch_id",
            (group_id,),
        )
        return [(int(n), bytes(e), bytes(s)) for n, e, s in rows]

    def epochs_with_recipients(self, group_id: str) -> list[EpochRow]:
        """Each epoch of a group held, with whom it left out and was given, oldest first."""
        rows = self.query(
            "SELECT number, epoch_id, secret, excluded, given FROM epochs WHERE group_id = ? "
            "ORDER BY number, epoch_id",
            (group_id,),
        )
        return [
            EpochRow(
                number=int(number),
                epoch_id=bytes(epoch_id),
                secret=bytes(secret),
                excluded=_devices(listed),
                given=None if given is None else frozenset(_devices(given)),
            )
            for number, epoch_id, secret, listed, given in rows
        ]

    def epoch_given(self, group_id: str, epoch_id: bytes) -> frozenset[bytes] | None:
        """The devices an epoch held here was sealed to, if known."""
        rows = self.query(
            "SELECT given FROM epochs WHERE group_id = ? AND epoch_id = ?", (group_id, epoch_id)
        )
        if not rows or rows[0][0] is None:
            return None
        return frozenset(_devices(rows[0][0]))

    def groups_with_epochs(self) -> list[str]:
        """The ids of the groups this node holds any epoch of."""
        return [str(group_id) for (group_id,) in self.query("SELECT DISTINCT group_id FROM epochs")]

    # --- bundles ---------------------------------------------------------------------

    def keep_bundle(self, bundle: NewBundle) -> None:
        """Store a bundle not held yet (inside a write); one held already stays as it is."""
        self.run(f"INSERT OR IGNORE INTO {_BUNDLE_ROW}", _values(bundle))

    def keep_or_restate_bundles(self, bundles: Sequence[NewBundle]) -> None:
        """Store bundles, each in the state it names, and give that state to those held
        already (inside a write)."""
        self.run_many(
            f"INSERT INTO {_BUNDLE_ROW} ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            [_values(bundle) for bundle in bundles],
        )

    def set_bundle_state(self, bundle_id: bytes, state: str) -> None:
        """Give a held bundle a state (inside a write)."""
        self.run("UPDATE bundles SET state = ? WHERE id = ?", (state, bundle_id))

    def invalidate_feed_after(
        self, group_id: str, author: bytes, cutoff: int
    ) -> list[StoredBundle]:
        """Make an author's bundles past ``cutoff`` invalid; return those that were not
        (inside a write)."""
        rows = self.query(
            f"{_BUNDLE_COLUMNS}WHERE group_id = ? AND author = ? AND seq > ? AND state != ?",
            (group_id, author, cutoff, INVALID),
        )
        self.run(
            "UPDATE bundles SET state = ? WHERE group_id = ? AND author = ? AND seq > ?",
            (INVALID, group_id, author, cutoff),
        )
        return [_stored(r) for r in rows]

    def bundle(self, bundle_id: bytes) -> StoredBundle | None:
        """A held bundle by id."""
        rows = self.query(f"{_BUNDLE_COLUMNS}WHERE id = ?", (bundle_id,))
        return _stored(rows[0]) if rows else None

    def bundle_at(self, group_id: str, author: bytes, seq: int) -> StoredBundle | None:
        """The bundle an author's feed holds at a sequence number, if any."""
        rows = self.query(
            f"{_BUNDLE_COLUMNS}WHERE group_id = ? AND author = ? AND seq = ?",
            (group_id, author, seq),
        )
        return _stored(rows[0]) if rows else None

    def bundles_in_state(self, group_id: str, state: str) -> list[StoredBundle]:
        """A group's bundles in one state, by author, then seq."""
        rows = self.query(
            f"{_BUNDLE_COLUMNS}WHERE group_id = ? AND state = ? ORDER BY author, seq",
            (group_id, state),
        )
        return [_stored(r) for r in rows]

    def all_bundles(self, group_id: str | None) -> list[StoredBundle]:
        """Every bundle (of one group, or of all for ``None``), by group, author, seq."""
        rows = self.query(
            f"{_BUNDLE_COLUMNS}WHERE ? IS NULL OR group_id = ? ORDER BY group_id, author, seq",
            (group_id, group_id),
        )
        return [_stored(r) for r in rows]

    def feed_head(self, group_id: str, author: bytes) -> tuple[int, bytes] | None:
        """(seq, id) of the newest applied bundle of an author's feed, counting the heads
        of snapshots taken in unless the bundle they name is held and not applied."""
        rows = self.query(
            "SELECT seq, id FROM bundles WHERE group_id = ? AND author = ? AND state = ? "
            "UNION ALL SELECT seq, id FROM covered WHERE group_id = ? AND author = ? "
            "AND NOT EXISTS (SELECT 1 FROM bundles WHERE bundles.id = covered.id "
            "AND bundles.state != ?) "
            "ORDER BY seq DESC LIMIT 1",
            (group_id, author, APPLIED, group_id, author, APPLIED),
        )
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def newest_bundle_of(self, group_id: str, author: bytes) -> tuple[int, bytes] | None:
        """(seq, id) of an author's newest bundle held, whatever its state."""
        rows = self.query(
            "SELECT seq, id FROM bundles WHERE group_id = ? AND author = ? "
            "ORDER BY seq DESC LIMIT 1",
            (group_id, author),
        )
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def feed_authors(self, group_id: str) -> list[bytes]:
        """The authors with an applied bundle or a covered head in a group."""
        rows = self.query(
            "SELECT DISTINCT author FROM bundles WHERE group_id = ? AND state = ? "
            "UNION SELECT author FROM covered WHERE group_id = ?",
            (group_id, APPLIED, group_id),
        )
        return [bytes(a) for (a,) in rows]

    def applied_count(self, group_id: str) -> int:
        """How many of a group's bundles are applied."""
        rows = self.query(
            "SELECT COUNT(*) FROM bundles WHERE group_id = ? AND state = ?", (group_id, APPLIED)
        )
        return int(rows[0][0])

    def has_waiting(self, group_id: str, author: bytes) -> bool:
        """Whether a bundle of an author's feed in the group waits to be judged."""
        rows = self.query(
            "SELECT 1 FROM bundles WHERE group_id = ? AND author = ? AND state = ? LIMIT 1",
            (group_id, author, WAITING),
        )
        return bool(rows)

    def waiting_envelopes(self, group_id: str, author: bytes) -> list[bytes]:
        """The envelopes of an author's bundles in the group that wait, in feed order."""
        rows = self.query(
            "SELECT envelope FROM bundles WHERE group_id = ? AND author = ? AND state = ? "
            "ORDER BY seq",
            (group_id, author, WAITING),
        )
        return [bytes(data) for (data,) in rows]

    def applied_authors(self, group_id: str) -> list[tuple[bytes, bytes]]:
        """(id, author) of each applied bundle of a group, by author, then seq."""
        rows = self.query(
            "SELECT id, author FROM bundles WHERE group_id = ? AND state = ? ORDER BY author, seq",
            (group_id, APPLIED),
        )
        return [(bytes(i), bytes(a)) for i, a in rows]

    def feed_ids_after(self, group_id: str, author: bytes, seq: int) -> dict[int, bytes]:
        """Seq -> id of the bundles of an author's feed held here past ``seq``."""
        rows = self.query(
            "SELECT seq, id FROM bundles WHERE group_id = ? AND author = ? AND seq > ?",
            (group_id, author, seq),
        )
        return {int(s): bytes(i) for s, i in rows}

    def wrote_under(self, group_id: str, device: bytes, topic: bytes) -> bool:
        """Whether a device sealed any bundle held here under the epoch of ``topic``."""
        return bool(
            self.query(
                "SELECT 1 FROM bundles WHERE group_id = ? AND author = ? AND topic = ? LIMIT 1",
                (group_id, device, topic),
            )
        )

    def applied_version_vector(self, group_id: str) -> dict[bytes, int]:
        """Author -> the highest seq of its applied bundles, for one group."""
        rows = self.query(
            "SELECT author, MAX(seq) FROM bundles WHERE group_id = ? AND state = ? GROUP BY author",
            (group_id, APPLIED),
        )
        return {bytes(a): int(s) for a, s in rows}

    def bundles_of_topic(self, topic: bytes) -> list[tuple[bytes, bytes, int, bytes]]:
        """(id, author, seq, envelope) of every bundle of a topic, by author, then seq."""
        rows = self.query(
            "SELECT id, author, seq, envelope FROM bundles WHERE topic = ? ORDER BY author, seq",
            (topic,),
        )
        return [(bytes(i), bytes(a), int(s), bytes(e)) for i, a, s, e in rows]

    # --- arrivals ---------------------------------------------------------------------

    def newest_arrival(self) -> int:
        """A mark for :meth:`arrivals_after`: bundles stored after now come after it."""
        rows = self.query("SELECT MAX(rowid) FROM bundles")
        return int(rows[0][0] or 0)

    def arrivals_after(self, after: int) -> tuple[list[tuple[bytes, bytes, bytes]], int]:
        """(id, topic, envelope) of bundles stored since a mark, and the new mark."""
        rows = self.query(
            "SELECT rowid, id, topic, envelope FROM bundles WHERE rowid > ? ORDER BY rowid",
            (after,),
        )
        mark = int(rows[-1][0]) if rows else after
        return [(bytes(i), bytes(t), bytes(e)) for _, i, t, e in rows], mark

    def written_since(self, after: int, author: bytes) -> list[tuple[bytes, bytes, bytes]]:
        """(id, topic, envelope) of the bundles one author wrote since a mark."""
        rows = self.query(
            "SELECT id, topic, envelope FROM bundles WHERE rowid > ? AND author = ? ORDER BY rowid",
            (after, author),
        )
        return [(bytes(i), bytes(t), bytes(e)) for i, t, e in rows]

    # --- snapshots' heads and equivocations ---------------------------------------------

    def cover_feed(self, group_id: str, author: bytes, seq: int, bundle_id: bytes) -> None:
        """Note that a snapshot taken in covers an author's feed up to ``seq`` (in a write)."""
        self.run(
            "INSERT OR REPLACE INTO covered(group_id, author, seq, id) VALUES (?, ?, ?, ?)",
            (group_id, author, seq, bundle_id),
        )

    def covered_seq(self, group_id: str, author: bytes) -> int:
        """The last seq of an author's feed a snapshot taken in here covers (0: none)."""
        rows = self.query(
            "SELECT MAX(seq) FROM covered WHERE group_id = ? AND author = ?", (group_id, author)
        )
        return int(rows[0][0] or 0)

    def keep_equivocation(
        self,
        group_id: str,
        author: bytes,
        seq: int,
        bundle_id: bytes,
        topic: bytes,
        envelope: bytes,
    ) -> None:
        """Keep the second of two bundles a device signed for one seq (inside a write)."""
        self.run(
            "INSERT OR IGNORE INTO equivocations(group_id, author, seq, id, topic, envelope) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (group_id, author, seq, bundle_id, topic, envelope),
        )

    def holds_equivocation(self, bundle_id: bytes) -> bool:
        """Whether a bundle is held as the second of two a device signed for one seq."""
        return bool(self.query("SELECT 1 FROM equivocations WHERE id = ? LIMIT 1", (bundle_id,)))

    def first_equivocated_seqs(self, group_id: str) -> dict[bytes, int]:
        """Device -> the first seq it signed two bundles for, in a group."""
        rows = self.query(
            "SELECT author, MIN(seq) FROM equivocations WHERE group_id = ? GROUP BY author",
            (group_id,),
        )
        return {bytes(a): int(s) for a, s in rows}

    def equivocations_of_topic(self, topic: bytes) -> list[tuple[bytes, bytes]]:
        """(id, envelope) of the second bundles of devices that equivocated on a topic."""
        rows = self.query("SELECT id, envelope FROM equivocations WHERE topic = ?", (topic,))
        return [(bytes(bid), bytes(env)) for bid, env in rows]
