"""The relay's store in PostgreSQL, shared by several relay processes behind one address.

Each process holds one connection for the core's reads and batches and, while it runs,
one more that LISTENs for the others' commits. Two rules make sharing safe:

- A batch of bundles takes a transaction-scoped advisory lock before its first write and
  holds it through COMMIT, so batches from all processes commit one after another and
  cursors (an identity column) become visible strictly in order. A subscriber that has
  seen cursor N has therefore seen everything stored before it, whichever process stored
  it — the rule nodes resume by.
- A batch that stored anything sends a NOTIFY as it commits. Every other process then
  reads what was committed after what it last passed on and passes it to its own
  subscribers (:meth:`relay.core.RelayCore.committed_elsewhere`); it also looks once a
  second, so a notification lost while the listener reconnects costs a second, not data.

The calls are synchronous, like SQLite's, because the core is a sans-IO state machine that
the deterministic simulations drive without an event loop; on loopback or a LAN a round
trip costs about what an SQLite page read does. Only the listener is asynchronous.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from hearth.errors import StorageError
from relay.sqlite_store import SqliteStore, add_identity, check_backup, private_file
from relay.storage import (
    NO_END,
    STORE_FILE,
    USE_DATED_TO_S,
    Committed,
    Registered,
    Store,
    Stored,
    TopicState,
    expire_unused,
    fitting,
    prune_covered,
)

__all__ = ["CHANNEL", "PostgresStore", "backup_to_file", "restore_from_file"]

log = logging.getLogger(__name__)

CHANNEL = "hearth_relay_stored"
_WRITE_LOCK = 0x4845415254480001  # the advisory lock every batch of writes holds
_LISTEN_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    topic          BYTEA PRIMARY KEY,
    relay_key      BYTEA NOT NULL,
    bytes          BIGINT NOT NULL DEFAULT 0,
    bundles        BIGINT NOT NULL DEFAULT 0,
    pruned_through BIGINT NOT NULL DEFAULT 0,
    proof          BYTEA NOT NULL DEFAULT '',
    frozen_at      DOUBLE PRECISION NOT NULL DEFAULT 0
);
-- When a node last registered the topic (to the day; 0: before this was kept).
ALTER TABLE topics ADD COLUMN IF NOT EXISTS used_at DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS envelopes (
    cursor  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic   BYTEA NOT NULL REFERENCES topics(topic),
    id      BYTEA NOT NULL UNIQUE,
    data    BYTEA NOT NULL,
    origin  BYTEA
);
CREATE INDEX IF NOT EXISTS envelopes_by_topic ON envelopes (topic, cursor);
CREATE TABLE IF NOT EXISTS snapshots (
    topic    BYTEA NOT NULL REFERENCES topics(topic),
    cursor   BIGINT NOT NULL,
    covers   BIGINT NOT NULL,
    noted_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, cursor)
);
CREATE TABLE IF NOT EXISTS peer_cursors (
    peer    BYTEA PRIMARY KEY,
    cursor  BIGINT NOT NULL
);
"""


class PostgresStore(Store):
    """A relay store in a PostgreSQL database (give each relay deployment its own)."""

    shared = True
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._batch = False  # a write transaction is open (and holds the write lock)
        self._stored_any = False  # ... and has stored a new envelope
        self._db = self._connect()
        try:
            with self._db.transaction():
                # Several processes starting at once must not create the tables twice.
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                self._db.execute(_SCHEMA)
        except psycopg.Error as exc:
            raise StorageError(
                f"The relay could not set up its tables in PostgreSQL ({exc})."
            ) from exc

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StorageError(
                f"The relay cannot reach its PostgreSQL database ({_first_line(exc)}); check "
                "database_url and that the server is running."
            ) from exc

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a statement; outside a batch, a connection lost since the last one is made
        again once (a restarted database server)."""
        try:
            return self._db.execute(query, params, binary=True).fetchall()
        except psycopg.OperationalError as exc:
            if self._batch or (not self._db.closed and not self._db.broken):
                self._abandon_batch()
                raise StorageError(f"The relay's database failed ({_first_line(exc)}).") from exc
            log.warning("reconnecting to PostgreSQL: %s", _first_line(exc))
            self._db = self._connect()
            return self._db.execute(query, params, binary=True).fetchall()
        except psycopg.Error as exc:
            self._abandon_batch()
            raise StorageError(
                f"The relay's database refused a statement ({_first_line(exc)})."
            ) from exc

    def _write(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run a statement that returns rows, or none (then an empty list)."""
        try:
            cursor = self._db.execute(query, params, binary=True)
            return cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:
            self._abandon_batch()
            raise StorageError(f"The relay could not store a bundle ({_first_line(exc)}).") from exc

    def _begin(self) -> None:
        if self._batch:
            return
        self._write("BEGIN", ())
        self._batch, self._stored_any = True, False
        self._write("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))

    def _abandon_batch(self) -> None:
        if self._batch:
            self._batch = False
            if not self._db.closed and not self._db.broken:
                try:
                    self._db.execute("ROLLBACK")
                except psycopg.Error:
                    log.warning("rolling back a failed batch failed too")

    def close(self) -> None:
        self._abandon_batch()
        self._db.close()

    def topic(self, topic: bytes) -> TopicState | None:
        rows = self._rows(
            "SELECT relay_key, frozen_at, bytes, bundles FROM topics WHERE topic = %s", (topic,)
        )
        if not rows:
            return None
        relay_key, frozen_at, size, bundles = rows[0]
        return TopicState(bytes(relay_key), float(frozen_at), int(size), int(bundles))

    def register(
        self, topic: bytes, relay_key: bytes, proof: bytes = b"", now: float = 0.0
    ) -> Registered:
        inserted = self._rows(
            "INSERT INTO topics(topic, relay_key, proof, used_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (topic) DO NOTHING RETURNING 1",
            (topic, relay_key, proof, now),
        )
        if inserted:
            return Registered.NEW
        existing = self.topic(topic)
        if existing is None or existing.relay_key != relay_key:
            return Registered.TAKEN
        if proof:  # topics registered before proofs were kept get theirs now
            self._rows(
                "UPDATE topics SET proof = %s WHERE topic = %s AND proof = '' RETURNING 1",
                (proof, topic),
            )
        self._rows(
            "UPDATE topics SET used_at = %s WHERE topic = %s AND used_at < %s RETURNING 1",
            (now, topic, now - USE_DATED_TO_S),
        )
        return Registered.KNOWN

    def expire(self, unused_since: float) -> int:
        if self._batch:
            raise StorageError("Expiring topics waits while a batch of bundles is being written.")
        self._begin()
        gone = expire_unused(self._write, "%s", unused_since)
        self.commit()
        return gone

    def stored_bytes(self) -> int:
        return int(self._rows("SELECT COALESCE(SUM(bytes), 0) FROM topics")[0][0])

    def registration(self, topic: bytes) -> tuple[bytes, bytes] | None:
        rows = self._rows(
            "SELECT relay_key, proof FROM topics WHERE topic = %s AND proof != ''", (topic,)
        )
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    def freeze(self, topic: bytes, at: float) -> None:
        self._rows(
            "UPDATE topics SET frozen_at = %s WHERE topic = %s "
            "AND (frozen_at = 0 OR frozen_at > %s) RETURNING 1",
            (at, topic, at),
        )

    def add(
        self, topic: bytes, bundle_id: bytes, data: bytes, origin: bytes | None = None
    ) -> Stored:
        self._begin()
        # One round trip: insert unless stored already, count it against the topic if new,
        # and say where it is (the last SELECT does not see the row this one inserts).
        rows = self._write(
            "WITH new AS (INSERT INTO envelopes(topic, id, data, origin) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING cursor), "
            "counted AS (UPDATE topics SET bytes = bytes + %s, bundles = bundles + 1 "
            "WHERE topic = %s AND EXISTS (SELECT 1 FROM new)) "
            "SELECT cursor, true FROM new UNION ALL "
            "SELECT cursor, false FROM envelopes WHERE id = %s",
            (topic, bundle_id, data, origin, len(data), topic, bundle_id),
        )
        cursor, new = rows[0]
        self._stored_any |= bool(new)
        return Stored(int(cursor), bool(new))

    def peer_cursor(self, peer: bytes) -> int:
        rows = self._rows("SELECT cursor FROM peer_cursors WHERE peer = %s", (peer,))
        return int(rows[0][0]) if rows else 0

    def set_peer_cursor(self, peer: bytes, cursor: int) -> None:
        self._begin()
        self._write(
            "INSERT INTO peer_cursors(peer, cursor) VALUES (%s, %s) ON CONFLICT (peer) "
            "DO UPDATE SET cursor = GREATEST(peer_cursors.cursor, excluded.cursor)",
            (peer, cursor),
        )

    def commit(self) -> None:
        if not self._batch:
            return
        if self._stored_any:  # delivered to the listeners when (and only if) it commits
            self._write("SELECT pg_notify(%s, '')", (CHANNEL,))
        self._write("COMMIT", ())
        self._batch = False

    def busy(self) -> bool:
        return self._batch

    def all_after(
        self,
        cursor: int,
        limit: int = 200,
        *,
        not_from: bytes = b"",
        max_bytes: int | None = None,
    ) -> list[tuple[int, bytes, bytes]]:
        where = "cursor > %s AND (origin IS NULL OR origin != %s)"
        through = self._through(where, (cursor, not_from), limit, max_bytes)
        rows = self._rows(
            f"SELECT cursor, topic, data FROM envelopes WHERE {where} AND cursor <= %s "  # noqa: S608 - {where} is one of ours
            "ORDER BY cursor LIMIT %s",
            (cursor, not_from, through, limit),
        )
        return [(int(c), bytes(t), bytes(d)) for c, t, d in rows]

    def committed_after(
        self, cursor: int, through: int | None, limit: int = 200, max_bytes: int | None = None
    ) -> list[Committed]:
        where = "cursor > %s AND cursor <= %s"
        params = (cursor, NO_END if through is None else through)
        last = self._through(where, params, limit, max_bytes)
        rows = self._rows(
            f"SELECT cursor, topic, data, origin FROM envelopes WHERE {where} AND cursor <= %s "  # noqa: S608 - {where} is one of ours
            "ORDER BY cursor LIMIT %s",
            (*params, last, limit),
        )
        return [Committed(int(c), bytes(t), bytes(d), bytes(o or b"")) for c, t, d, o in rows]

    def _through(
        self, where: str, params: tuple[Any, ...], limit: int, max_bytes: int | None
    ) -> int:
        """The last cursor of a page read by bytes (sizes are read first, not envelopes)."""
        if max_bytes is None:
            return NO_END
        sizes = self._rows(
            f"SELECT cursor, LENGTH(data) FROM envelopes WHERE {where} ORDER BY cursor LIMIT %s",  # noqa: S608 - {where} is one of ours
            (*params, limit),
        )
        return fitting(sizes, max_bytes) if sizes else NO_END

    def count_after(self, cursor: int, *, not_from: bytes = b"") -> int:
        rows = self._rows(
            "SELECT COUNT(*) FROM envelopes WHERE cursor > %s AND (origin IS NULL OR origin != %s)",
            (cursor, not_from),
        )
        return int(rows[0][0])

    def newest_overall(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(cursor), 0) FROM envelopes")[0][0])

    def after(
        self, topic: bytes, cursor: int, limit: int = 200, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        where = "topic = %s AND cursor > %s"
        through = self._through(where, (topic, cursor), limit, max_bytes)
        rows = self._rows(
            f"SELECT cursor, data FROM envelopes WHERE {where} AND cursor <= %s "  # noqa: S608 - {where} is one of ours
            "ORDER BY cursor LIMIT %s",
            (topic, cursor, through, limit),
        )
        return [(int(c), bytes(d)) for c, d in rows]

    def newest(self, topic: bytes) -> int:
        rows = self._rows(
            "SELECT COALESCE(MAX(cursor), 0) FROM envelopes WHERE topic = %s", (topic,)
        )
        return int(rows[0][0])

    def cursor_of(self, bundle_id: bytes) -> int | None:
        rows = self._rows("SELECT cursor FROM envelopes WHERE id = %s", (bundle_id,))
        return int(rows[0][0]) if rows else None

    def at(self, cursor: int) -> bytes | None:
        rows = self._rows("SELECT data FROM envelopes WHERE cursor = %s", (cursor,))
        return bytes(rows[0][0]) if rows else None

    def add_snapshot(self, topic: bytes, cursor: int, covers: int, now: float) -> None:
        self._write(
            "INSERT INTO snapshots(topic, cursor, covers, noted_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (topic, cursor, covers, now),
        )

    def latest_snapshot(self, topic: bytes) -> tuple[int, int] | None:
        rows = self._rows(
            "SELECT s.cursor, s.covers FROM snapshots s JOIN envelopes e ON e.cursor = s.cursor "
            "WHERE s.topic = %s ORDER BY s.covers DESC, s.cursor DESC LIMIT 1",
            (topic,),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def pruned_through(self, topic: bytes) -> int:
        rows = self._rows("SELECT pruned_through FROM topics WHERE topic = %s", (topic,))
        return int(rows[0][0]) if rows else 0

    def prune(self, older_than: float) -> int:
        if self._batch:
            raise StorageError("Pruning waits while a batch of bundles is being written.")
        self._begin()
        removed = prune_covered(self._write, "%s", older_than, self.pruned_through)
        self.commit()
        return removed

    def writable(self) -> bool:
        try:
            return not self._rows("SELECT pg_is_in_recovery()")[0][0]
        except StorageError:
            return False

    def topic_sizes(self) -> list[tuple[int, int]]:
        return [(int(b), int(n)) for b, n in self._rows("SELECT bytes, bundles FROM topics")]

    def counts(self) -> tuple[int, int]:
        rows = self._rows("SELECT (SELECT COUNT(*) FROM topics), (SELECT COUNT(*) FROM envelopes)")
        return int(rows[0][0]), int(rows[0][1])

    async def watch_commits(self, wake: Callable[[], None]) -> None:
        attempt = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    attempt = 0
                    wake()  # whatever was committed while nobody listened
                    async for _ in conn.notifies():
                        wake()
            except psycopg.Error as exc:
                delay = _LISTEN_BACKOFF_S[min(attempt, len(_LISTEN_BACKOFF_S) - 1)]
                attempt += 1
                log.warning(
                    "listening for other relay processes failed (%s); again in %.1f s",
                    _first_line(exc),
                    delay,
                )
                await asyncio.sleep(delay)


# Every table and column a backup carries, in an order that keeps references intact.
_TABLES = (
    ("topics", "topic, relay_key, bytes, bundles, pruned_through, proof, frozen_at, used_at"),
    ("envelopes", "cursor, topic, id, data, origin"),
    ("snapshots", "topic, cursor, covers, noted_at"),
    ("peer_cursors", "peer, cursor"),
)


def backup_to_file(url: str, dest: Path, identity: bytes | None = None) -> Path:
    """Write the database's relay tables, as of one moment, to an SQLite file in the
    relay's own schema (the file ``hearth-relay backup`` makes of an SQLite store too, so
    it restores onto either store), with the relay's identity key if given, readable by
    its owner only; ``dest`` is a file, or a directory for ``relay.db``.

    One read-only, repeatable-read transaction: the relay processes go on writing.
    """
    target = dest / STORE_FILE if dest.is_dir() else dest
    if target.exists():
        raise StorageError(f"{target} exists already; Hearth does not overwrite a backup.")
    partial = target.with_name(target.name + ".partial")
    private_file(partial)
    SqliteStore(partial).close()  # the schema
    out = sqlite3.connect(partial)
    try:
        with psycopg.connect(url, connect_timeout=10) as source:
            source.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for table, columns in _TABLES:
                marks = ", ".join("?" * len(columns.split(",")))
                with source.cursor(name=f"backup_{table}", binary=True) as rows:
                    rows.execute(f"SELECT {columns} FROM {table}")  # noqa: S608 - our names
                    while batch := rows.fetchmany(500):
                        out.executemany(
                            f"INSERT INTO {table}({columns}) VALUES ({marks})",  # noqa: S608
                            batch,
                        )
        out.commit()
        add_identity(out, identity)
        out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except (psycopg.Error, sqlite3.Error) as exc:
        out.close()
        partial.unlink(missing_ok=True)
        raise StorageError(f"The backup failed ({_first_line(exc)}); nothing was written.") from exc
    out.close()
    partial.rename(target)
    return target


def restore_from_file(backup: Path, url: str) -> None:
    """Load a backup file (of either store) into an empty PostgreSQL database, cursors and
    all, so that nodes resume where they were; nothing is written if anything fails."""
    check_backup(backup)
    PostgresStore(url).close()  # the schema
    with tempfile.TemporaryDirectory() as scratch:
        # A copy brought up to the current schema (a backup from an older relay).
        current = Path(scratch) / STORE_FILE
        shutil.copyfile(backup, current)
        SqliteStore(current).close()
        try:
            with (
                psycopg.connect(url, connect_timeout=10) as target,
                sqlite3.connect(current) as source,
            ):
                held = target.execute("SELECT EXISTS (SELECT 1 FROM topics)").fetchone()
                if held and held[0]:
                    raise StorageError(
                        "That database already holds a relay store; restore into an empty one."
                    )
                for table, columns in _TABLES:
                    with target.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for row in source.execute(f"SELECT {columns} FROM {table}"):  # noqa: S608
                            copy.write_row(row)
                target.execute(
                    "SELECT setval(pg_get_serial_sequence('envelopes', 'cursor'), "
                    "GREATEST((SELECT MAX(cursor) FROM envelopes), 1))"
                )
        except (psycopg.Error, sqlite3.Error) as exc:
            raise StorageError(
                f"The restore failed ({_first_line(exc)}); nothing was restored."
            ) from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
