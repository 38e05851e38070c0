"""The relay's default store: one SQLite file, owned by one relay process.

WAL mode with ``synchronous=FULL``: a bundle is acknowledged only after the transaction
holding it has committed. One process writes, so cursors (SQLite's row ids) are handed out
in commit order by construction. Also the online backup and the restore of such a file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hearth.errors import StorageError
from relay.moderation import TopicInfo, moderate
from relay.storage import Committed, Registered, Store, Stored, TopicChecks, TopicState
from relay.store_sql import NO_END, USE_DATED_TO_S, expire_unused, fitting, prune_superseded

__all__ = [
    "IDENTITY_TABLE",
    "STORE_FILE",
    "SqliteStore",
    "backup_identity",
    "backup_store",
    "check_backup",
    "restore_store",
]

STORE_FILE = "relay.db"
"""The store's file in a relay's data directory."""

IDENTITY_TABLE = "relay_identity"
"""The table a backup file keeps the relay's identity key in (never a live store)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    topic      BLOB PRIMARY KEY,
    relay_key  BLOB NOT NULL,
    bytes      INTEGER NOT NULL DEFAULT 0,
    bundles    INTEGER NOT NULL DEFAULT 0,
    pruned_through INTEGER NOT NULL DEFAULT 0,  -- envelopes up to here are gone
    proof      BLOB NOT NULL DEFAULT x''         -- the registration proof, for peer relays
);
CREATE TABLE IF NOT EXISTS envelopes (
    cursor   INTEGER PRIMARY KEY AUTOINCREMENT,
    topic    BLOB NOT NULL REFERENCES topics(topic),
    id       BLOB NOT NULL UNIQUE,
    data     BLOB NOT NULL,
    origin   BLOB             -- the peer relay it came from; NULL: from a client
);
CREATE INDEX IF NOT EXISTS envelopes_by_topic ON envelopes (topic, cursor);
CREATE TABLE IF NOT EXISTS snapshots (
    topic   BLOB NOT NULL REFERENCES topics(topic),
    cursor  INTEGER NOT NULL,   -- where the snapshot bundle itself is stored
    covers  INTEGER NOT NULL,   -- every bundle up to this cursor is inside it
    noted_at REAL NOT NULL DEFAULT 0,   -- when it arrived (seconds since the epoch)
    PRIMARY KEY (topic, cursor)
);
CREATE TABLE IF NOT EXISTS peer_cursors (
    peer    BLOB PRIMARY KEY,   -- a peer relay's id
    cursor  INTEGER NOT NULL    -- everything it sent up to its own cursor here is stored
);
CREATE TABLE IF NOT EXISTS moderation (   -- relay/moderation.py
    kind    TEXT NOT NULL,      -- ban, allow, drop
    value   TEXT NOT NULL,      -- a key or topic (hex), or an address range
    reason  TEXT NOT NULL DEFAULT '',
    at      REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS moderation_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    reason  TEXT NOT NULL DEFAULT ''
);
"""
# Columns added after the first release, for stores created before them.
_ADDED_COLUMNS = (
    ("topics", "pruned_through", "INTEGER NOT NULL DEFAULT 0"),
    ("snapshots", "noted_at", "REAL NOT NULL DEFAULT 0"),
    ("topics", "proof", "BLOB NOT NULL DEFAULT x''"),
    ("envelopes", "origin", "BLOB"),
    ("topics", "frozen_at", "REAL NOT NULL DEFAULT 0"),
    # When a node last registered the topic (to the day; 0: before this was kept).
    ("topics", "used_at", "REAL NOT NULL DEFAULT 0"),
    # For `hearth-relay topics` (0: before these were kept) and `hearth-relay freeze`.
    ("topics", "first_seen", "REAL NOT NULL DEFAULT 0"),
    ("topics", "last_write", "REAL NOT NULL DEFAULT 0"),
    ("topics", "held", "INTEGER NOT NULL DEFAULT 0"),
    # The digest of the admission invite that admitted the topic ('' if none did).
    ("topics", "invite", "TEXT NOT NULL DEFAULT ''"),
)


def backup_store(data_dir: Path, dest: Path, identity: bytes | None = None) -> Path:
    """Copy a relay's store, consistent as of one moment, while the relay keeps running,
    with its identity key (``identity``) if given: the file is readable by its owner only.

    SQLite's online backup reads one snapshot of the database (WAL lets the relay go on
    writing meanwhile); ``dest`` is a file, or a directory to put ``relay.db`` in.
    """
    source_path = data_dir / STORE_FILE
    if not source_path.exists():
        raise StorageError(f"There is no relay store in {data_dir}.")
    target = dest / STORE_FILE if dest.is_dir() else dest
    if target.exists():
        raise StorageError(f"{target} exists already; Hearth does not overwrite a backup.")
    try:
        _copy(source_path, target, identity)
    except sqlite3.Error as exc:
        raise StorageError(f"The backup failed ({exc}); nothing was written.") from exc
    return target


def restore_store(backup: Path, data_dir: Path) -> Path:
    """Put a backup in place as the store of a relay that is not running."""
    target = data_dir / STORE_FILE
    if target.exists():
        raise StorageError(
            f"{data_dir} already holds a relay store; restore into an empty directory."
        )
    check_backup(backup)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        _copy(backup, target)
    except sqlite3.Error as exc:
        raise StorageError(f"The restore failed ({exc}); nothing was restored.") from exc
    return target


def check_backup(backup: Path) -> None:
    """Refuse a file that is not an intact relay backup, before anything is written."""
    try:
        db = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
        try:
            ok = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{backup} is not a relay backup ({exc}).") from exc
    if not ok or not {"topics", "envelopes"} <= tables:
        raise StorageError(f"{backup} is damaged or not a relay backup; nothing was restored.")


def backup_identity(backup: Path) -> bytes | None:
    """The relay identity key a backup carries (``None``: one made before backups did)."""
    try:
        db = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
        try:
            row = db.execute(f"SELECT secret FROM {IDENTITY_TABLE}").fetchone()  # noqa: S608
        finally:
            db.close()
    except sqlite3.OperationalError:
        return None  # no such table
    return bytes(row[0]) if row else None


def add_identity(db: sqlite3.Connection, identity: bytes | None) -> None:
    """Put ``identity`` into a backup being written, or (``None``) take any out of a
    store being restored, leaving no trace of it in the file's free pages."""
    db.execute("PRAGMA secure_delete=ON")
    db.execute(f"DROP TABLE IF EXISTS {IDENTITY_TABLE}")
    if identity is not None:
        db.execute(f"CREATE TABLE {IDENTITY_TABLE} (secret BLOB NOT NULL)")
        db.execute(f"INSERT INTO {IDENTITY_TABLE}(secret) VALUES (?)", (identity,))  # noqa: S608
    db.commit()


def private_file(path: Path) -> None:
    """Create ``path`` empty (replacing any), readable and writable by its owner only: a
    backup holds the relay's secret key."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _copy(source: Path, target: Path, identity: bytes | None = None) -> None:
    """SQLite's online backup of ``source`` into ``target``: there whole, or not at all,
    carrying ``identity`` (and nothing else outside the store's own tables)."""
    partial = target.with_name(target.name + ".partial")
    private_file(partial)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
            add_identity(dst, identity)
        finally:
            dst.close()
    except sqlite3.Error:
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    partial.rename(target)


class SqliteStore(Store):
    """The relay's SQLite file."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            for table, column, kind in _ADDED_COLUMNS:
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"The relay store {path} is damaged or not a relay store ({exc})."
            ) from exc

    def close(self) -> None:
        self._db.close()

    def topic(self, topic: bytes) -> TopicState | None:
        row = self._db.execute(
            "SELECT relay_key, frozen_at, bytes, bundles, held FROM topics WHERE topic = ?",
            (topic,),
        ).fetchone()
        if not row:
            return None
        return TopicState(bytes(row[0]), float(row[1]), int(row[2]), int(row[3]), bool(row[4]))

    def register(
        self,
        topic: bytes,
        relay_key: bytes,
        proof: bytes = b"",
        now: float = 0.0,
        invite: str = "",
    ) -> Registered:
        existing = self.topic(topic)
        if existing is not None and existing.relay_key != relay_key:
            return Registered.TAKEN
        if existing is not None:
            if proof:  # topics registered before proofs were kept get theirs now
                self._db.execute(
                    "UPDATE topics SET proof = ? WHERE topic = ? AND proof = x''", (proof, topic)
                )
            self._db.execute(
                "UPDATE topics SET used_at = ? WHERE topic = ? AND used_at < ?",
                (now, topic, now - USE_DATED_TO_S),
            )
            return Registered.KNOWN
        self._db.execute(
            "INSERT INTO topics(topic, relay_key, proof, used_at, first_seen, invite) "
            "VALUES (?, ?, ?, ?, (julianday('now') - 2440587.5) * 86400.0, ?)",
            (topic, relay_key, proof, now, invite),
        )
        return Registered.NEW

    def expire(self, unused_since: float) -> int:
        if self.busy():
            raise StorageError("Expiring topics waits while a batch of bundles is being written.")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            gone = expire_unused(
                lambda sql, args: self._db.execute(sql, args).fetchall(), "?", unused_since
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StorageError(f"The relay could not expire unused topics ({exc}).") from exc
        return gone

    def stored_bytes(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM topics").fetchone()[0])

    def topics_with_invite(self, invite: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM topics WHERE invite = ?", (invite,))
        return int(row.fetchone()[0])

    def topics_with_key(self, relay_key: bytes) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM topics WHERE relay_key = ?", (relay_key,)
        ).fetchone()
        return int(row[0])

    def registration(self, topic: bytes) -> tuple[bytes, bytes] | None:
        row = self._db.execute(
            "SELECT relay_key, proof FROM topics WHERE topic = ? AND proof != x''", (topic,)
        ).fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else None

    def freeze(self, topic: bytes, at: float) -> None:
        self._db.execute(
            "UPDATE topics SET frozen_at = ? WHERE topic = ? AND (frozen_at = 0 OR frozen_at > ?)",
            (at, topic, at),
        )

    def add(
        self, topic: bytes, bundle_id: bytes, data: bytes, origin: bytes | None = None
    ) -> Stored:
        try:
            self._begin()
            try:
                # One statement for a new bundle. One stored already fails the UNIQUE
                # constraint on its id, leaving the batch's transaction open and no cursor
                # used up (INSERT OR IGNORE and ON CONFLICT DO NOTHING use one up each time).
                cursor = self._db.execute(
                    "INSERT INTO envelopes(topic, id, data, origin) VALUES (?, ?, ?, ?)",
                    (topic, bundle_id, data, origin),
                ).lastrowid
            except sqlite3.IntegrityError:
                row = self._db.execute(
                    "SELECT cursor FROM envelopes WHERE id = ?", (bundle_id,)
                ).fetchone()
                if row is None:
                    raise  # not a bundle stored already
                return Stored(int(row[0]), False)
            self._count_stored(topic, len(data))
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StorageError(f"The relay could not store a bundle ({exc}).") from exc
        assert cursor is not None
        return Stored(cursor, True)

    def add_checked(
        self,
        topic: bytes,
        bundle_id: bytes,
        data: bytes,
        checks: TopicChecks,
        origin: bytes | None = None,
    ) -> Stored | None:
        began = not self._db.in_transaction
        try:
            self._begin()
            try:
                # The topic's row is read by the insert itself, inside the write transaction:
                # whatever another process committed before it (`hearth-relay freeze`)
                # counts. Refused, it inserts nothing and uses up no cursor.
                inserted = self._db.execute(
                    "INSERT INTO envelopes(topic, id, data, origin) "
                    "SELECT ?, ?, ?, ? FROM topics WHERE topic = ? AND relay_key = ? "
                    "AND held = 0 AND (frozen_at = 0 OR frozen_at > ?) "
                    "AND bytes + ? <= ? AND bundles + 1 <= ?",
                    (
                        topic,
                        bundle_id,
                        data,
                        origin,
                        topic,
                        checks.relay_key,
                        checks.now,
                        len(data),
                        checks.max_bytes,
                        checks.max_bundles,
                    ),
                )
            except sqlite3.IntegrityError:
                inserted = None  # stored already: found by add(), after the full checks
            if inserted is None or inserted.rowcount != 1:
                if began:  # nothing else is staged in it: the write lock is let go
                    self._db.execute("ROLLBACK")
                return None
            cursor = inserted.lastrowid
            self._count_stored(topic, len(data))
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StorageError(f"The relay could not store a bundle ({exc}).") from exc
        assert cursor is not None
        return Stored(cursor, True)

    def _count_stored(self, topic: bytes, size: int) -> None:
        """One more bundle of ``size`` bytes in the topic's usage, in the same transaction."""
        self._db.execute(
            "UPDATE topics SET bytes = bytes + ?, bundles = bundles + 1, "
            "last_write = (julianday('now') - 2440587.5) * 86400.0 WHERE topic = ?",
            (size, topic),
        )

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def peer_cursor(self, peer: bytes) -> int:
        try:
            row = self._db.execute(
                "SELECT cursor FROM peer_cursors WHERE peer = ?", (peer,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"The relay could not read a peer's progress ({exc}).") from exc
        return int(row[0]) if row else 0

    def set_peer_cursor(self, peer: bytes, cursor: int) -> None:
        try:
            self._begin()
            self._db.execute(
                "INSERT INTO peer_cursors(peer, cursor) VALUES (?, ?) ON CONFLICT(peer) "
                "DO UPDATE SET cursor = MAX(cursor, excluded.cursor)",
                (peer, cursor),
            )
        except (sqlite3.Error, OverflowError) as exc:  # OverflowError: no 64-bit integer
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StorageError(f"The relay could not note a peer's progress ({exc}).") from exc

    def all_after(
        self,
        cursor: int,
        limit: int = 200,
        *,
        not_from: bytes = b"",
        max_bytes: int | None = None,
    ) -> list[tuple[int, bytes, bytes]]:
        where = "cursor > ? AND (origin IS NULL OR origin != ?)"
        through = self._through(where, (cursor, not_from), limit, max_bytes)
        rows = self._db.execute(
            f"SELECT cursor, topic, data FROM envelopes WHERE {where} AND cursor <= ? "  # noqa: S608 - {where} is one of ours
            "ORDER BY cursor LIMIT ?",
            (cursor, not_from, through, limit),
        ).fetchall()
        return [(int(c), bytes(t), bytes(d)) for c, t, d in rows]

    def committed_after(
        self, cursor: int, through: int | None, limit: int = 200, max_bytes: int | None = None
    ) -> list[Committed]:
        where = "cursor > ? AND cursor <= ?"
        params = (cursor, NO_END if through is None else through)
        last = self._through(where, params, limit, max_bytes)
        rows = self._db.execute(
            f"SELECT cursor, topic, data, origin FROM envelopes WHERE {where} AND cursor <= ? "  # noqa: S608 - {where} is one of ours
            "ORDER BY cursor LIMIT ?",
            (*params, last, limit),
        ).fetchall()
        return [Committed(int(c), bytes(t), bytes(d), bytes(o or b"")) for c, t, d, o in rows]

    def _through(
        self, where: str, params: tuple[Any, ...], limit: int, max_bytes: int | None
    ) -> int:
        """The last cursor of a page read by bytes (sizes are read first, not envelopes)."""
        if max_bytes is None:
            return NO_END
        sizes = self._db.execute(
            f"SELECT cursor, LENGTH(data) FROM envelopes WHERE {where} ORDER BY cursor LIMIT ?",  # noqa: S608 - {where} is one of ours
            (*params, limit),
        ).fetchall()
        return fitting(sizes, max_bytes) if sizes else NO_END

    def count_after(self, cursor: int, *, not_from: bytes = b"") -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM envelopes WHERE cursor > ? AND (origin IS NULL OR origin != ?)",
            (cursor, not_from),
        ).fetchone()
        return int(row[0])

    def newest_overall(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(cursor), 0) FROM envelopes").fetchone()[0])

    def commit(self) -> None:
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StorageError(f"The relay could not store a batch of bundles ({exc}).") from exc

    def after(
        self, topic: bytes, cursor: int, limit: int = 200, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        where = "topic = ? AND cursor > ?"
        through = self._through(where, (topic, cursor), limit, max_bytes)
        rows = self._db.execute(
            f"SELECT cursor, data FROM envelopes WHERE {where} AND cursor <= ? "  # noqa: S608 - {where} is one of ours
            "ORDER BY cursor LIMIT ?",
            (topic, cursor, through, limit),
        ).fetchall()
        return [(int(c), bytes(d)) for c, d in rows]

    def newest(self, topic: bytes) -> int:
        row = self._db.execute(
            "SELECT COALESCE(MAX(cursor), 0) FROM envelopes WHERE topic = ?", (topic,)
        ).fetchone()
        return int(row[0])

    def add_snapshot(self, topic: bytes, cursor: int, covers: int, now: float) -> None:
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO snapshots(topic, cursor, covers, noted_at) "
                "VALUES (?, ?, ?, ?)",
                (topic, cursor, covers, now),
            )
        except sqlite3.Error as exc:
            raise StorageError(f"The relay could not note a snapshot ({exc}).") from exc

    def latest_snapshot(self, topic: bytes) -> tuple[int, int] | None:
        row = self._db.execute(
            "SELECT s.cursor, s.covers FROM snapshots s JOIN envelopes e ON e.cursor = s.cursor "
            "WHERE s.topic = ? ORDER BY s.covers DESC, s.cursor DESC LIMIT 1",
            (topic,),
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def pruned_through(self, topic: bytes) -> int:
        row = self._db.execute(
            "SELECT pruned_through FROM topics WHERE topic = ?", (topic,)
        ).fetchone()
        return int(row[0]) if row else 0

    def prune(self, older_than: float) -> int:
        if self.busy():
            raise StorageError("Pruning waits while a batch of bundles is being written.")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            removed = prune_superseded(
                lambda sql, args: self._db.execute(sql, args).fetchall(),
                "?",
                older_than,
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StorageError(f"The relay could not delete old snapshots ({exc}).") from exc
        return removed

    def busy(self) -> bool:
        return self._db.in_transaction

    def cursor_of(self, bundle_id: bytes) -> int | None:
        row = self._db.execute("SELECT cursor FROM envelopes WHERE id = ?", (bundle_id,)).fetchone()
        return int(row[0]) if row else None

    def at(self, cursor: int) -> bytes | None:
        row = self._db.execute("SELECT data FROM envelopes WHERE cursor = ?", (cursor,)).fetchone()
        return bytes(row[0]) if row else None

    def writable(self) -> bool:
        if self._db.in_transaction:
            return True  # a batch is being written
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            return False
        return True

    def topic_sizes(self) -> list[tuple[int, int]]:
        rows = self._db.execute("SELECT bytes, bundles FROM topics").fetchall()
        return [(int(b), int(n)) for b, n in rows]

    async def watch_commits(self, wake: Callable[[], None]) -> None:
        return  # one process owns the file: nobody else commits to it

    def topic_list(self) -> list[TopicInfo]:
        rows = self._db.execute(
            "SELECT topic, bytes, bundles, first_seen, last_write, held, frozen_at FROM topics"
        ).fetchall()
        return [
            TopicInfo(bytes(t), int(b), int(n), float(f), float(w), bool(h), float(z))
            for t, b, n, f, w, h, z in rows
        ]

    def moderate(self, action: str, target: str, reason: str, now: float) -> bool:
        if self.busy():
            raise StorageError("Moderation waits while a batch of bundles is being written.")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            changed = moderate(
                lambda sql, args: self._db.execute(sql, args).fetchall(),
                "?",
                action,
                target,
                reason,
                now,
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StorageError(f"The relay store did not take the change ({exc}).") from exc
        return changed

    def moderation_lists(self) -> list[tuple[str, str, str, float]]:
        rows = self._db.execute("SELECT kind, value, reason, at FROM moderation").fetchall()
        return [(str(k), str(v), str(r), float(a)) for k, v, r, a in rows]

    def moderation_log(self, limit: int = 100) -> list[tuple[float, str, str, str]]:
        rows = self._db.execute(
            "SELECT at, action, target, reason FROM moderation_log ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [(float(a), str(c), str(t), str(r)) for a, c, t, r in rows]

    def moderation_counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT action, COUNT(*) FROM moderation_log GROUP BY action"
        ).fetchall()
        return {str(action): int(count) for action, count in rows}

    def counts(self) -> tuple[int, int]:
        topics = self._db.execute("SELECT COUNT(*) FROM topics").fetchone()[0]
        envelopes = self._db.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0]
        return int(topics), int(envelopes)
