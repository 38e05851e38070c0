"""The node's SQLite store.

One file per node, in WAL mode with ``synchronous=FULL``: when a write's transaction has
committed, it survives a crash or a SIGKILL, and the CLI reports success only after that.
Schema changes are numbered SQL files in ``migrations/`` applied in order and recorded in
``PRAGMA user_version``; ``PRAGMA application_id`` marks the file as Hearth's so a stray
database is refused instead of being written into.

Writers take the database's write lock (``BEGIN IMMEDIATE``) *before* reading what other
processes on the same home wrote, so two ``hearth`` commands never both extend the same
device's history from the same point.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hearth.errors import StorageError
from hearth.store.feed_rows import FeedRows
from hearth.store.home import create_private_file
from hearth.store.peer_rows import PeerRows
from hearth.store.relay_rows import RelayRows
from hearth.store.retraction_rows import RetractionRows

__all__ = ["ChangeRow", "GroupRow", "Store", "SyncLogRow"]

APPLICATION_ID = 0x48525448  # "HRTH"
_BUSY_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRow:
    """A group this node belongs to, as stored."""

    id: str
    name: str
    actor: bytes
    seed: bytes
    genesis: bytes
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeRow:
    """One stored Automerge change."""

    doc: str
    seq: int
    hash: bytes
    bytes: bytes
    local: bool
    touched: list[tuple[str, str]] | None  # None: unknown, so readers rebuild their view


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncLogRow:
    """How syncing with one relay or peer last went (times in ms; ``None``: never)."""

    url: str
    last_ok: int | None
    last_attempt: int | None
    last_error: str | None


def _touched(value: object) -> list[tuple[str, str]] | None:
    if not isinstance(value, list):
        return None
    return [(str(ref[0]), str(ref[1])) for ref in value]


def _statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (comments may contain semicolons)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise StorageError("A schema migration ends with an unfinished statement.")
    return statements


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("hearth.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


class Store(FeedRows, PeerRows, RelayRows, RetractionRows):
    """The node's store. Open with :meth:`open`; use as a context manager to close.

    Its named methods are the only way the node reads and writes it: those here, and
    those of the parts it is assembled from (``FeedRows``: epochs and bundles;
    ``PeerRows``: the peers it dials; ``RelayRows``: cursors and what each relay holds;
    ``RetractionRows``: what did not count)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._groups: tuple[tuple[int, int], list[GroupRow]] | None = None

    @classmethod
    def open(cls, path: Path, *, durable: bool = True) -> Store:
        """Open (creating if absent) the store at ``path``, migrating it to this version.

        ``durable=False`` skips waiting for the disk on each commit: only for simulations
        and benchmarks that throw the store away.
        """
        new = not path.exists() or path.stat().st_size == 0
        create_private_file(path)  # SQLite gives its WAL and SHM files the store's mode
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise StorageError(f"The store {path} cannot be opened ({exc}).") from exc
        store = cls(db, path)
        try:
            store._prepare(new, durable=durable)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StorageError(
                f"The store {path} is damaged or is not a Hearth store ({exc}). "
                "Nothing was changed; move it aside to start afresh."
            ) from exc
        except StorageError:
            db.close()
            raise
        return store

    def _prepare(self, new: bool, *, durable: bool) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        if not new and app_id != APPLICATION_ID:
            raise StorageError(
                f"{self.path} is not a Hearth store (it belongs to another program). "
                "Nothing was changed."
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        migrations = _migrations()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        newest = migrations[-1][0]
        if version > newest:
            raise StorageError(
                f"The store {self.path} was written by a newer Hearth; upgrade Hearth to open it."
            )
        pending = [(number, script) for number, script in migrations if number > version]
        if not pending:
            return
        # All in one transaction: a store is at one version or the next, never between
        # (and a new store is made with one commit, not one per migration).
        db.execute("BEGIN IMMEDIATE")
        try:
            for _, script in pending:
                # executescript would commit on its own; run statement by statement instead.
                for statement in _statements(script):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={newest}")
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mark(self) -> tuple[int, int]:
        """A mark that moves whenever anything is written to the store, by this
        connection or any other: equal marks, nothing was written between them."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        return self._db.total_changes, int(version)

    @contextmanager
    def write(self) -> Iterator[None]:
        """One durable write transaction holding the store's write lock.

        A write inside a write joins the outer one.
        """
        if self._db.in_transaction:
            yield
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"The store {self.path} cannot be written ({exc}).") from exc
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StorageError(f"Saving to {self.path} failed ({exc}); nothing was saved.") from exc

    @contextmanager
    def read(self) -> Iterator[None]:
        """A consistent read: everything read inside sees one state of the store.

        Inside a :meth:`write` it simply joins that transaction.
        """
        if self._db.in_transaction:
            yield
            return
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StorageError(f"The store {self.path} cannot be read ({exc}).") from exc
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a write: a part that is undone alone if it fails."""
        self._db.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO part")
            self._db.execute("RELEASE part")
            raise
        self._db.execute("RELEASE part")

    def query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        """Rows of a read, with SQLite errors turned into :class:`StorageError`."""
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"Reading the store {self.path} failed ({exc}).") from exc

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """One statement for many rows (inside a :meth:`write`)."""
        try:
            self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StorageError(f"Writing the store {self.path} failed ({exc}).") from exc

    def run(self, sql: str, args: Sequence[object] = ()) -> None:
        """One statement (inside a :meth:`write`), with errors as :class:`StorageError`."""
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StorageError(f"Writing the store {self.path} failed ({exc}).") from exc

    # --- meta ---------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A stored setting, or ``None``."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting (inside a :meth:`write`)."""
        self.run("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # --- groups -----------------------------------------------------------------------

    def add_group(self, group: GroupRow) -> None:
        """Record a group this node now belongs to (inside a :meth:`write`)."""
        self.run(
            "INSERT INTO groups(id, name, actor, seed, genesis, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (group.id, group.name, group.actor, group.seed, group.genesis, group.created_at),
        )

    def set_group_actor(self, group_id: str, actor: bytes) -> None:
        """The actor id this device writes a group's changes under from now on."""
        self.run("UPDATE groups SET actor = ? WHERE id = ?", (actor, group_id))

    def rename_group(self, group_id: str, name: str) -> None:
        """Keep the stored copy of a group's name current (inside a :meth:`write`)."""
        self.run("UPDATE groups SET name = ? WHERE id = ?", (name, group_id))

    def version(self) -> tuple[int, int]:
        """A mark that differs whenever the database may have changed since it was taken:
        a row written on this connection, or a commit by another (another process on the
        same home). Equal marks: whatever was read in between reads the same again."""
        try:
            (other,) = self._db.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"Reading the store {self.path} failed ({exc}).") from exc
        return self._db.total_changes, int(other)

    def data_version(self) -> int:
        """A counter that moves when *another* connection (another process on this home)
        commits, and never for this connection's own writes. Reading it touches no table:
        cheap enough to read several times a second."""
        return self.version()[1]

    def groups(self) -> list[GroupRow]:
        """Every group this node belongs to, oldest first (asked on every read of a
        ledger: read again only when the database changed)."""
        version = self.version()
        if self._groups is None or self._groups[0] != version:
            self._groups = version, self._read_groups()
        return list(self._groups[1])

    def _read_groups(self) -> list[GroupRow]:
        rows = self.query(
            "SELECT id, name, actor, seed, genesis, created_at FROM groups ORDER BY created_at, id"
        )
        return [
            GroupRow(
                id=str(r[0]),
                name=str(r[1]),
                actor=bytes(r[2]),
                seed=bytes(r[3]),
                genesis=bytes(r[4]),
                created_at=int(r[5]),
            )
            for r in rows
        ]

    # --- the sync log -------------------------------------------------------------------

    def log_sync_attempt(self, url: str, now_ms: int, *, ok: bool, error: str | None) -> None:
        """Note a sync with ``url`` just tried: when, whether it worked, what went wrong
        (inside a :meth:`write`). The time it last worked is kept across failures."""
        self.run(
            "INSERT INTO sync_log(url, last_ok, last_attempt, last_error) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(url) DO UPDATE SET last_attempt = excluded.last_attempt, "
            "last_error = excluded.last_error, "
            "last_ok = COALESCE(excluded.last_ok, sync_log.last_ok)",
            (url, now_ms if ok else None, now_ms, error),
        )

    def sync_log(self, urls: Sequence[str]) -> dict[str, SyncLogRow]:
        """How syncing last went with each of ``urls`` that was ever tried."""
        if not urls:
            return {}
        rows = self.query(
            "SELECT url, last_ok, last_attempt, last_error FROM sync_log WHERE url IN "  # noqa: S608
            f"({', '.join('?' for _ in urls)})",
            tuple(urls),
        )
        return {
            str(url): SyncLogRow(
                url=str(url),
                last_ok=None if ok is None else int(ok),
                last_attempt=None if attempt is None else int(attempt),
                last_error=None if error is None else str(error),
            )
            for url, ok, attempt, error in rows
        }

    # --- changes and snapshots -----------------------------------------------------

    def append_changes(
        self,
        group_id: str,
        doc: str,
        changes: Sequence[tuple[bytes, bytes]],
        *,
        local: bool,
        touched: Sequence[tuple[str, str]] | None,
    ) -> int:
        """Store ``(hash, bytes)`` changes not seen before; return how many were new."""
        note = json.dumps(None if touched is None else [list(ref) for ref in touched])
        added = 0
        for change_hash, data in changes:
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO changes(group_id, doc, hash, bytes, local, touched) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (group_id, doc, change_hash, data, int(local), note),
                )
            except sqlite3.Error as exc:
                raise StorageError(f"Writing the store {self.path} failed ({exc}).") from exc
            added += cursor.rowcount
        return added

    def changes_after(self, group_id: str, doc: str | None, seq: int) -> list[ChangeRow]:
        """Stored changes of one document (or of all, for ``None``) that arrived after ``seq``."""
        rows = self.query(
            "SELECT seq, hash, bytes, local, touched, doc FROM changes "
            "WHERE group_id = ? AND (? IS NULL OR doc = ?) AND seq > ? ORDER BY seq",
            (group_id, doc, doc, seq),
        )
        return [
            ChangeRow(
                doc=str(r[5]),
                seq=int(r[0]),
                hash=bytes(r[1]),
                bytes=bytes(r[2]),
                local=bool(r[3]),
                touched=_touched(json.loads(str(r[4]))),
            )
            for r in rows
        ]

    def count_changes(self, group_id: str, doc: str) -> int:
        """How many changes of one document are stored outside its snapshot."""
        rows = self.query(
            "SELECT COUNT(*) FROM changes WHERE group_id = ? AND doc = ?", (group_id, doc)
        )
        return int(rows[0][0])

    def doc_names(self, group_id: str) -> set[str]:
        """The names of every document of a group the store holds anything of."""
        rows = self.query(
            "SELECT doc FROM changes WHERE group_id = ? UNION SELECT doc FROM snapshots "
            "WHERE group_id = ?",
            (group_id, group_id),
        )
        return {str(r[0]) for r in rows}

    def last_seq(self) -> int:
        """The newest change's arrival number (0 if none)."""
        return int(self.query("SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])

    def snapshot(self, group_id: str, doc: str) -> tuple[bytes, int] | None:
        """The saved document and the last change seq it covers, if there is one."""
        rows = self.query(
            "SELECT bytes, through FROM snapshots WHERE group_id = ? AND doc = ?", (group_id, doc)
        )
        if not rows:
            return None
        return bytes(rows[0][0]), int(rows[0][1])

    def put_snapshot(
        self,
        group_id: str,
        doc: str,
        data: bytes,
        through: int,
        *,
        keep: Sequence[bytes] = (),
        replace: bool = False,
    ) -> None:
        """Save a whole document and drop the changes it covers (inside a :meth:`write`).

        ``keep`` names changes that arrived but are not in the document yet (waiting for
        a change they depend on); they stay stored. A snapshot older than the stored one
        (two processes compacting at once) is dropped: it would lose what the newer holds
        — unless ``replace``: a document made again without changes that do not count.
        """
        stored = self.query(
            "SELECT through FROM snapshots WHERE group_id = ? AND doc = ?", (group_id, doc)
        )
        if stored and int(stored[0][0]) >= through and not replace:
            return
        self.run(
            "INSERT OR REPLACE INTO snapshots(group_id, doc, bytes, through) VALUES (?, ?, ?, ?)",
            (group_id, doc, data, through),
        )
        waiting = set(keep)
        for row in self.changes_after(group_id, doc, 0):
            if row.seq <= through and row.hash not in waiting:
                self.run("DELETE FROM changes WHERE seq = ?", (row.seq,))

    # --- the materialised view ---------------------------------------------------------

    def view_ready(self, group_id: str) -> bool:
        """Whether the group's view has been built and can be trusted."""
        return bool(self.query("SELECT 1 FROM view_ready WHERE group_id = ?", (group_id,)))

    def view_entries(self, group_id: str) -> list[tuple[str, str, dict[str, object]]]:
        """Every ``(table, id, entry)`` of a group's view."""
        rows = self.query("SELECT tbl, id, raw FROM view_entries WHERE group_id = ?", (group_id,))
        return [(str(t), str(i), json.loads(raw)) for t, i, raw in rows]

    def view_entry(self, group_id: str, table: str, entry_id: str) -> dict[str, object] | None:
        """One entry of a group's view, or ``None``."""
        rows = self.query(
            "SELECT raw FROM view_entries WHERE group_id = ? AND tbl = ? AND id = ?",
            (group_id, table, entry_id),
        )
        return json.loads(rows[0][0]) if rows else None

    def put_view_entries(
        self,
        group_id: str,
        entries: Sequence[tuple[str, str, Mapping[str, object] | None]],
        *,
        replace_all: bool = False,
    ) -> None:
        """Write entries of the view (``None`` removes one), inside a :meth:`write`."""
        try:
            if replace_all:
                self._db.execute("DELETE FROM view_entries WHERE group_id = ?", (group_id,))
            self._db.executemany(
                "DELETE FROM view_entries WHERE group_id = ? AND tbl = ? AND id = ?",
                [(group_id, t, i) for t, i, raw in entries if raw is None],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO view_entries(group_id, tbl, id, raw) VALUES (?, ?, ?, ?)",
                [(group_id, t, i, json.dumps(raw)) for t, i, raw in entries if raw is not None],
            )
            self._db.execute("INSERT OR IGNORE INTO view_ready(group_id) VALUES (?)", (group_id,))
        except sqlite3.Error as exc:
            raise StorageError(f"Writing the store {self.path} failed ({exc}).") from exc

    def integrity_problems(self) -> list[str]:
        """What SQLite's integrity check reports; empty when the file is sound."""
        rows = self.query("PRAGMA integrity_check")
        found = [str(r[0]) for r in rows]
        return [] if found == ["ok"] else found
