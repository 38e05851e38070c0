"""The relay's store port: what the relay keeps (topics with their relay keys, and the
envelopes of each topic), as the parts of the relay that use it see it.

The port is split by who uses it: :class:`SessionStore` (serving a node),
:class:`PeeringStore` (links with peer relays), :class:`SharedStore` (other relay
processes writing the same store), :class:`UpkeepStore` (pruning and expiry) and
:class:`OperatorStore` (the operator's commands and the status pages), with
:class:`BundleBatch` and :class:`TopicReads` the parts two of them share.
:class:`Store` is all of them, which :class:`~relay.core.RelayCore` takes. Two kinds
provide it: :class:`~relay.sqlite_store.SqliteStore`, one SQLite file owned by one relay
process (the default), and :class:`~relay.postgres_store.PostgresStore`, one PostgreSQL
database that several relay processes behind one address share. This module imports
neither: :func:`relay.stores.open_store` picks one.

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
from collections.abc import Callable
from dataclasses import dataclass

from relay.moderation import TopicInfo

__all__ = [
    "BundleBatch",
    "Committed",
    "OperatorStore",
    "PeeringStore",
    "Registered",
    "SessionStore",
    "SharedStore",
    "Store",
    "Stored",
    "TopicChecks",
    "TopicInfo",
    "TopicReads",
    "TopicState",
    "UpkeepStore",
]


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
    (:meth:`SessionStore.add_checked`): registered to the key its signature was checked with,
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


class BundleBatch(abc.ABC):
    """The open batch of bundle writes, which a client's bundles and a peer relay's share.

    Writes of bundles are staged in one open batch (:meth:`add`, and
    :meth:`PeeringStore.set_peer_cursor`) and made durable together by :meth:`commit`:
    many publishes share one flush to disk. If staging or committing fails, the whole
    batch is rolled back and the caller must refuse every bundle staged in it.
    """

    @abc.abstractmethod
    def add(
        self, topic: bytes, bundle_id: bytes, data: bytes, origin: bytes | None = None
    ) -> Stored:
        """Stage an envelope in the open batch (or find it stored); durable at :meth:`commit`."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Make everything staged durable (one flush to disk for the batch)."""

    @abc.abstractmethod
    def busy(self) -> bool:
        """Whether a batch of bundles is staged and not yet committed."""


class TopicReads(abc.ABC):
    """A topic's row and the totals, which serving a node and an operator's commands both read."""

    @abc.abstractmethod
    def topic(self, topic: bytes) -> TopicState | None:
        """A topic's key, freeze and usage (one read: every publish needs all three), if
        the topic is registered."""

    @abc.abstractmethod
    def counts(self) -> tuple[int, int]:
        """(topics, envelopes) stored."""


class SessionStore(BundleBatch, TopicReads):
    """What serving a node's session needs: its topics' registration and freeze, its bundles
    stored, and catch-ups read (:class:`~relay.core.RelayCore`'s client side).
    """

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
        (seconds since the epoch) dates it as in use, to the day (:meth:`UpkeepStore.expire`);
        ``invite``: the digest of the admission invite that admitted a new topic, if that
        is what did (:meth:`topics_with_invite`)."""

    @abc.abstractmethod
    def topics_with_invite(self, invite: str) -> int:
        """How many topics stored here an admission invite (its digest) admitted."""

    @abc.abstractmethod
    def topics_with_key(self, relay_key: bytes) -> int:
        """How many topics are registered with this relay key."""

    @abc.abstractmethod
    def freeze(self, topic: bytes, at: float) -> None:
        """Take no bundles for a topic from ``at`` (seconds since the epoch); a freeze only
        ever moves earlier, so whoever holds the old key cannot undo one."""

    @abc.abstractmethod
    def add_checked(
        self,
        topic: bytes,
        bundle_id: bytes,
        data: bytes,
        checks: TopicChecks,
        origin: bytes | None = None,
    ) -> Stored | None:
        """Stage a new envelope from a client (or, with ``origin``, from that peer relay),
        as :meth:`add` does, if its topic's row
        passes ``checks`` in the same statement that stores it; otherwise stage nothing
        and return ``None`` (also for a bundle stored already): the caller then reads the
        row and decides as it would without this (:meth:`topic`, :meth:`add`).

        What the row says is read with the write: an operator's ``hearth-relay freeze``
        from another process, or a group's freeze, acts on the next bundle without the
        relay reading the row before each one."""

    @abc.abstractmethod
    def add_snapshot(self, topic: bytes, cursor: int, covers: int, now: float) -> None:
        """Note that the bundle at ``cursor`` is a snapshot holding everything to ``covers``."""

    @abc.abstractmethod
    def cursor_of(self, bundle_id: bytes) -> int | None:
        """Where a bundle is stored, if it is."""

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
    def at(self, cursor: int) -> bytes | None:
        """The envelope stored at a cursor."""

    @abc.abstractmethod
    def latest_snapshot(self, topic: bytes) -> tuple[int, int] | None:
        """(cursor, covers) of the snapshot covering the most, if the topic has one."""

    @abc.abstractmethod
    def pruned_through(self, topic: bytes) -> int:
        """The cursor up to which a topic's envelopes were pruned (0: none were)."""


class PeeringStore(BundleBatch):
    """What linking with peer relays needs: a topic's proof to pass on, how far each peer's
    bundles are stored, and every topic's bundles in cursor order to mirror.
    """

    @abc.abstractmethod
    def registration(self, topic: bytes) -> tuple[bytes, bytes] | None:
        """(relay key, proof) of a topic, if it is registered with a proof (which peer
        relays need to register it in turn)."""

    @abc.abstractmethod
    def peer_cursor(self, peer: bytes) -> int:
        """How far this relay has stored what a peer relay sent (the peer's own cursor)."""

    @abc.abstractmethod
    def set_peer_cursor(self, peer: bytes, cursor: int) -> None:
        """Stage, in the open batch, that a peer's bundles up to ``cursor`` are dealt with."""

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
    def count_after(self, cursor: int, *, not_from: bytes = b"") -> int:
        """How many envelopes arrived after ``cursor``, not counting those from a peer."""

    @abc.abstractmethod
    def newest_overall(self) -> int:
        """The newest cursor of any topic (0 if nothing is stored)."""


class SharedStore(abc.ABC):
    """What passing on other relay processes' bundles needs, for a store they write too."""

    shared: bool = False
    """Whether other relay processes write to this store too (their bundles then reach
    this process's subscribers through :meth:`committed_after` and :meth:`watch_commits`)."""

    @abc.abstractmethod
    def committed_after(
        self, cursor: int, through: int | None, limit: int = 200, max_bytes: int | None = None
    ) -> list[Committed]:
        """Up to ``limit`` envelopes of every topic after ``cursor`` (and up to ``through``,
        if given), in order, with where each came from; no more than ``max_bytes`` of them
        together, if given (but always the first)."""

    @abc.abstractmethod
    async def watch_commits(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever another process may have committed bundles, until
        cancelled (a store no other process writes returns at once)."""


class UpkeepStore(abc.ABC):
    """What the relay's periodic upkeep needs: old snapshots pruned, unused topics expired,
    the bytes stored counted afresh.
    """

    @abc.abstractmethod
    def prune(self, older_than: float) -> int:
        """Delete the snapshots that one noted before ``older_than`` supersedes; return
        how many. The bundles they cover stay (R13: :func:`prune_superseded`)."""

    @abc.abstractmethod
    def expire(self, unused_since: float) -> int:
        """Forget every topic nobody has registered since ``unused_since`` (seconds since
        the epoch) and all it holds; how many topics. Topics from before registrations
        were dated are kept until they are registered again."""

    @abc.abstractmethod
    def stored_bytes(self) -> int:
        """The bytes of every envelope stored, in all topics."""


class OperatorStore(TopicReads):
    """What the operator's commands (``hearth-relay topics``, ``freeze``, ``ban``, ...) and
    the relay's status pages (``/readyz``, ``/metrics``, ``/info``) need.
    """

    kind: str = ""
    """What the store is, for ``/info`` and logs (``sqlite`` or ``postgresql``)."""

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
    def topic_list(self) -> list[TopicInfo]:
        """Every topic, with its size and times (``hearth-relay topics``)."""

    @abc.abstractmethod
    def topic_sizes(self) -> list[tuple[int, int]]:
        """(bytes, bundles) of every topic, for the storage metrics."""

    @abc.abstractmethod
    def writable(self) -> bool:
        """Whether a write could be made right now (for /readyz)."""


class Store(SessionStore, PeeringStore, SharedStore, UpkeepStore, OperatorStore):
    """The relay's durable state: every port above, as one store provides them.

    :class:`~relay.core.RelayCore` takes the whole; each other user takes the port it needs.
    """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the store."""
