"""What the relay keeps: topics with their relay keys, and the envelopes of each topic.

:class:`Store` is what :class:`~relay.core.RelayCore` needs of a store. Two kinds provide
it: :class:`~relay.sqlite_store.SqliteStore`, one SQLite file owned by one relay process
(the default), and :class:`~relay.postgres_store.PostgresStore`, one PostgreSQL database
that several relay processes behind one address share.

Every envelope gets an arrival cursor, increasing and never reused, which is what nodes
catch up by; a store hands cursors out in the order their batches become durable, so a
subscriber that has seen cursor N has seen everything stored before it. Once a snapshot
is older than the retention period, the older snapshots it supersedes are deleted; the
bundles it covers stay, as a node checks a snapshot against them (R13). (Relays before
R13 deleted those too; a topic remembers up to where, ``pruned_through``.)
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hearth.errors import ConfigError
from relay.moderation import TopicInfo

if TYPE_CHECKING:
    from relay.config import RelayConfig

__all__ = [
    "NO_END",
    "STORE_FILE",
    "USE_DATED_TO_S",
    "Committed",
    "Registered",
    "Store",
    "Stored",
    "TopicChecks",
    "TopicInfo",
    "TopicState",
    "expire_unused",
    "fitting",
    "open_store",
    "prune_superseded",
]

NO_END = (1 << 63) - 1
"""A cursor past every cursor."""

STORE_FILE = "relay.db"


class Registered(enum.Enum):
    """What registering a topic did."""

    NEW = "new"
    KNOWN = "known"  # registered already, to the same key
    TAKEN = "taken"  # registered already, to another key


@dataclass(frozen=True, slots=True)
class Stored:
    """Where an envelope ended up: its cursor, and whether it was new."""

    cursor: int
    new: bool


@dataclass(frozen=True, slots=True)
class TopicState:
    """A registered topic: the key that admits its bundles, when it stops taking any (0:
    never), and how much it holds."""

    relay_key: bytes
    frozen_at: float
    bytes: int
    bundles: int
    held: bool = False  # frozen by the operator (`hearth-relay freeze`)


@dataclass(frozen=True, slots=True)
class TopicChecks:
    """What a topic's row must say for a client's bundle to be stored
    (:meth:`Store.add_checked`): registered to the key its signature was checked with,
    not held by the operator, not frozen at ``now`` (seconds since the epoch), and with
    room for the bundle under the topic's quota."""

    relay_key: bytes
    now: float
    max_bytes: int
    max_bundles: int


@dataclass(frozen=True, slots=True)
class Committed:
    """An envelope as stored: where, for which topic, and which peer relay it came from
    (empty: from a client)."""

    cursor: int
    topic: bytes
    data: bytes
    origin: bytes


class Store(abc.ABC):
    """The relay's durable state, as the core uses it.

    Writes of bundles are staged in one open batch (:meth:`add`, :meth:`set_peer_cursor`)
    and made durable together by :meth:`commit`: many publishes share one flush to disk.
    If staging or committing fails, the whole batch is rolled back and the caller must
    refuse every bundle staged in it.
    """

    shared: bool = False
    """Whether other relay processes write to this store too (their bundles then reach
    this process's subscribers through :meth:`committed_after` and :meth:`watch_commits`)."""

    kind: str = ""
    """What the store is, for ``/info`` and logs (``sqlite`` or ``postgresql``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the store."""

    @abc.abstractmethod
    def topic(self, topic: bytes) -> TopicState | None:
        """A topic's key, freeze and usage (one read: every publish needs all three), if
        the topic is registered."""

    @abc.abstractmethod
    def register(
        self,
        topic: bytes,
        relay_key: bytes,
        proof: bytes = b"",
        now: float = 0.0,
        invite: str = "",
    ) -> Registered:
        """Register a topic with its relay key and the proof that came with it; ``now``
        (seconds since the epoch) dates it as in use, to the day (:meth:`expire`);
        ``invite``: the digest of the admission invite that admitted a new topic, if that
        is what did (:meth:`topics_with_invite`)."""

    @abc.abstractmethod
    def topics_with_invite(self, invite: str) -> int:
        """How many topics stored here an admission invite (its digest) admitted."""

    @abc.abstractmethod
    def expire(self, unused_since: float) -> int:
        """Forget every topic nobody has registered since ``unused_since`` (seconds since
        the epoch) and all it holds; how many topics. Topics from before registrations
        were dated are kept until they are registered again."""

    @abc.abstractmethod
    def stored_bytes(self) -> int:
        """The bytes of every envelope stored, in all topics."""

    @abc.abstractmethod
    def topics_with_key(self, relay_key: bytes) -> int:
        """How many topics are registered with this relay key."""

    @abc.abstractmethod
    def registration(self, topic: bytes) -> tuple[bytes, bytes] | None:
        """(relay key, proof) of a topic, if it is registered with a proof (which peer
        relays need to register it in turn)."""

    @abc.abstractmethod
    def freeze(self, topic: bytes, at: float) -> None:
        """Take no bundles for a topic from ``at`` (seconds since the epoch); a freeze only
        ever moves earlier, so whoever holds the old key cannot undo one."""

    @abc.abstractmethod
    def add(
        self, topic: bytes, bundle_id: bytes, data: bytes, origin: bytes | None = None
    ) -> Stored:
        """Stage an envelope in the open batch (or find it stored); durable at :meth:`commit`."""

    @abc.abstractmethod
    def add_checked(
        self, topic: bytes, bundle_id: bytes, data: bytes, checks: TopicChecks
    ) -> Stored | None:
        """Stage a new envelope from a client, as :meth:`add` does, if its topic's row
        passes ``checks`` in the same statement that stores it; otherwise stage nothing
        and return ``None`` (also for a bundle stored already): the caller then reads the
        row and decides as it would without this (:meth:`topic`, :meth:`add`).

        What the row says is read with the write: an operator's ``hearth-relay freeze``
        from another process, or a group's freeze, acts on the next bundle without the
        relay reading the row before each one."""

    @abc.abstractmethod
    def peer_cursor(self, peer: bytes) -> int:
        """How far this relay has stored what a peer relay sent (the peer's own cursor)."""

    @abc.abstractmethod
    def set_peer_cursor(self, peer: bytes, cursor: int) -> None:
        """Stage, in the open batch, that a peer's bundles up to ``cursor`` are dealt with."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Make everything staged durable (one flush to disk for the batch)."""

    @abc.abstractmethod
    def busy(self) -> bool:
        """Whether a batch of bundles is staged and not yet committed."""

    @abc.abstractmethod
    def all_after(
        self,
        cursor: int,
        limit: int = 200,
        *,
        not_from: bytes = b"",
        max_bytes: int | None = None,
    ) -> list[tuple[int, bytes, bytes]]:
        """Up to ``limit`` envelopes of every topic after ``cursor``, in order, as
        (cursor, topic, envelope); none that came from the peer ``not_from``; no more than
        ``max_bytes`` of them together, if given (but always the first)."""

    @abc.abstractmethod
    def committed_after(
        self, cursor: int, through: int | None, limit: int = 200, max_bytes: int | None = None
    ) -> list[Committed]:
        """Up to ``limit`` envelopes of every topic after ``cursor`` (and up to ``through``,
        if given), in order, with where each came from; no more than ``max_bytes`` of them
        together, if given (but always the first)."""

    @abc.abstractmethod
    def count_after(self, cursor: int, *, not_from: bytes = b"") -> int:
        """How many envelopes arrived after ``cursor``, not counting those from a peer."""

    @abc.abstractmethod
    def newest_overall(self) -> int:
        """The newest cursor of any topic (0 if nothing is stored)."""

    @abc.abstractmethod
    def after(
        self, topic: bytes, cursor: int, limit: int = 200, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` envelopes of a topic that arrived after ``cursor``, in order; no
        more than ``max_bytes`` of them together, if given (but always the first)."""

    @abc.abstractmethod
    def newest(self, topic: bytes) -> int:
        """The newest cursor of a topic (0 if empty)."""

    @abc.abstractmethod
    def cursor_of(self, bundle_id: bytes) -> int | None:
        """Where a bundle is stored, if it is."""

    @abc.abstractmethod
    def at(self, cursor: int) -> bytes | None:
        """The envelope stored at a cursor."""

    @abc.abstractmethod
    def add_snapshot(self, topic: bytes, cursor: int, covers: int, now: float) -> None:
        """Note that the bundle at ``cursor`` is a snapshot holding everything to ``covers``."""

    @abc.abstractmethod
    def latest_snapshot(self, topic: bytes) -> tuple[int, int] | None:
        """(cursor, covers) of the snapshot covering the most, if the topic has one."""

    @abc.abstractmethod
    def pruned_through(self, topic: bytes) -> int:
        """The cursor up to which a topic's envelopes were pruned (0: none were)."""

    @abc.abstractmethod
    def prune(self, older_than: float) -> int:
        """Delete the snapshots that one noted before ``older_than`` supersedes; return
        how many. The bundles they cover stay (R13: :func:`prune_superseded`)."""

    @abc.abstractmethod
    def writable(self) -> bool:
        """Whether a write could be made right now (for /readyz)."""

    @abc.abstractmethod
    def topic_sizes(self) -> list[tuple[int, int]]:
        """(bytes, bundles) of every topic, for the storage metrics."""

    @abc.abstractmethod
    def counts(self) -> tuple[int, int]:
        """(topics, envelopes) stored."""

    @abc.abstractmethod
    def topic_list(self) -> list[TopicInfo]:
        """Every topic, with its size and times (``hearth-relay topics``)."""

    @abc.abstractmethod
    def moderate(self, action: str, target: str, reason: str, now: float) -> bool:
        """Carry out and log one moderation action (:func:`relay.moderation.moderate`);
        whether it changed anything."""

    @abc.abstractmethod
    def moderation_lists(self) -> list[tuple[str, str, str, float]]:
        """The moderation lists' entries: (kind, value, reason, when)."""

    @abc.abstractmethod
    def moderation_log(self, limit: int = 100) -> list[tuple[float, str, str, str]]:
        """The newest moderation actions, newest first: (when, action, target, reason)."""

    @abc.abstractmethod
    def moderation_counts(self) -> dict[str, int]:
        """How many moderation actions of each kind were ever taken (the log only grows,
        so a relay sees a change by the total)."""

    @abc.abstractmethod
    async def watch_commits(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever another process may have committed bundles, until
        cancelled (a store no other process writes returns at once)."""


Rows = list[tuple[Any, ...]]


def prune_superseded(
    run: Callable[[str, tuple[Any, ...]], Rows],
    placeholder: str,
    older_than: float,
) -> int:
    """:meth:`Store.prune`'s work, shared by both stores inside the write transaction
    each holds: ``run`` executes one statement (written with ``?``, which becomes the
    driver's ``placeholder``) and returns its rows.

    Only snapshots go, never the bundles they cover: a node takes a snapshot only
    together with the signed bundles it covers, checked against them (R13), so a relay
    that deleted those would leave every new device with a snapshot it cannot check.
    """

    def sql(statement: str) -> str:
        return statement.replace("?", placeholder)

    removed = 0
    chosen = run(
        sql("SELECT topic, MAX(covers) FROM snapshots WHERE noted_at <= ? GROUP BY topic"),
        (older_than,),
    )
    for topic, covers in chosen:
        doomed = sql(
            "FROM envelopes WHERE topic = ? AND cursor IN "
            "(SELECT cursor FROM snapshots WHERE topic = ? AND covers < ?)"
        )
        args = (topic, topic, covers)
        count, size = run(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) {doomed}", args)[0]
        if not count:
            continue
        run(f"DELETE {doomed}", args)
        run(sql("DELETE FROM snapshots WHERE topic = ? AND covers < ?"), (topic, covers))
        run(
            sql("UPDATE topics SET bytes = bytes - ?, bundles = bundles - ? WHERE topic = ?"),
            (size, count, topic),
        )
        removed += int(count)
    return removed


USE_DATED_TO_S = 86_400.0
"""A topic's use is written down at most once a day (a write per registration would be
a write for every topic each time a node connects)."""


def expire_unused(
    run: Callable[[str, tuple[Any, ...]], Rows], placeholder: str, unused_since: float
) -> int:
    """:meth:`Store.expire`'s work, shared by both stores inside the write transaction
    each holds (as :func:`prune_covered`)."""

    def sql(statement: str) -> str:
        return statement.replace("?", placeholder)

    doomed = run(sql("SELECT topic FROM topics WHERE used_at > 0 AND used_at < ?"), (unused_since,))
    for (topic,) in doomed:
        for table in ("snapshots", "envelopes", "topics"):
            run(sql(f"DELETE FROM {table} WHERE topic = ?"), (topic,))  # noqa: S608 - ours
    return len(doomed)


def fitting(sizes: Sequence[tuple[Any, Any]], max_bytes: int) -> int:
    """Of envelopes' (cursor, size) in cursor order, the cursor of the last that fits
    into ``max_bytes`` with those before it: a page read by bytes, not by count (a page
    of 200 bundles of 1 MiB each would hold 200 MiB per reader). Always the first, so a
    page is never empty while envelopes remain."""
    total, through = 0, int(sizes[0][0])
    for cursor, size in sizes:
        total += int(size)
        if total > max_bytes and cursor != sizes[0][0]:
            break
        through = int(cursor)
    return through


def open_store(config: RelayConfig) -> Store:
    """The store a relay's settings name: PostgreSQL at ``database_url`` if set, otherwise
    SQLite in the data directory."""
    if not config.database_url:
        from relay.sqlite_store import SqliteStore

        return SqliteStore(Path(config.data) / STORE_FILE)
    try:
        from relay.postgres_store import PostgresStore
    except ImportError as exc:  # psycopg is an optional extra
        raise ConfigError(
            "database_url names PostgreSQL, which needs the relay's PostgreSQL driver: "
            "pip install 'hearth[postgres]'."
        ) from exc
    return PostgresStore(config.database_url)
