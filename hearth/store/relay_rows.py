"""The store's part for syncing with relays and peers: how far this node has read each
topic at each, which bundles each is known to hold, and the snapshots published there.

``hearth/net/sync_client.py`` decides what to send and read; this module only keeps and
finds what it needs for that.
"""

from __future__ import annotations

from collections.abc import Sequence

from hearth.store.feed_rows import INVALID
from hearth.store.statements import Statements

__all__ = ["RelayRows"]


class RelayRows(Statements):
    """Cursors, what each relay or peer holds, and the snapshots published at each."""

    def unsent_to(self, url: str, group_id: str, topic: bytes) -> list[tuple[bytes, bytes]]:
        """(id, envelope) of a topic's bundles, and of its proofs of equivocation (R4), that
        the relay or peer at ``url`` is not known to hold, by author, then seq; bundles
        held but made invalid are not sent."""
        rows = self.query(
            "SELECT id, envelope FROM (SELECT id, envelope, author, seq FROM bundles "
            "WHERE group_id = ? AND topic = ? AND state != ? "
            "AND id NOT IN (SELECT bundle_id FROM relay_has WHERE url = ?) "
            "UNION ALL SELECT id, envelope, author, seq FROM equivocations "
            "WHERE group_id = ? AND topic = ? "
            "AND id NOT IN (SELECT bundle_id FROM relay_has WHERE url = ?)) "
            "ORDER BY author, seq",
            (group_id, topic, INVALID, url, group_id, topic, url),
        )
        return [(bytes(bid), bytes(env)) for bid, env in rows]

    def relay_cursor(self, url: str, topic: bytes) -> int:
        """How far this node has read a topic at ``url`` (0: not yet; -1: to be read again
        from the start, without snapshots)."""
        rows = self.query(
            "SELECT cursor FROM relay_cursors WHERE url = ? AND topic = ?", (url, topic)
        )
        return int(rows[0][0]) if rows else 0

    def advance_relay_cursor(self, url: str, topic: bytes, cursor: int) -> None:
        """Move a topic's cursor at ``url`` forward to ``cursor`` (never back; in a write)."""
        self.run(
            "INSERT INTO relay_cursors(url, topic, cursor) VALUES (?, ?, ?) "
            "ON CONFLICT(url, topic) DO UPDATE SET cursor = MAX(cursor, excluded.cursor)",
            (url, topic, cursor),
        )

    def restart_relay_cursor(self, url: str, topic: bytes) -> None:
        """Mark a topic at ``url`` to be read again from the start, without snapshots (its
        cursor becomes -1; inside a write)."""
        self.run(
            "INSERT OR REPLACE INTO relay_cursors(url, topic, cursor) VALUES (?, ?, -1)",
            (url, topic),
        )

    def note_relay_has(self, url: str, bundle_ids: Sequence[bytes]) -> None:
        """Note that the relay or peer at ``url`` holds these bundles (inside a write)."""
        if len(bundle_ids) == 1:
            self.run(
                "INSERT OR IGNORE INTO relay_has(url, bundle_id) VALUES (?, ?)",
                (url, bundle_ids[0]),
            )
            return
        self.run_many(
            "INSERT OR IGNORE INTO relay_has(url, bundle_id) VALUES (?, ?)",
            [(url, bundle_id) for bundle_id in bundle_ids],
        )

    def relay_has(self, url: str, bundle_id: bytes) -> bool:
        """Whether the relay or peer at ``url`` is known to hold a bundle."""
        rows = self.query(
            "SELECT 1 FROM relay_has WHERE url = ? AND bundle_id = ?", (url, bundle_id)
        )
        return bool(rows)

    def bundle_topic(self, bundle_id: bytes) -> bytes | None:
        """The topic of a bundle held here, if it is held."""
        rows = self.query("SELECT topic FROM bundles WHERE id = ?", (bundle_id,))
        return bytes(rows[0][0]) if rows else None

    def published_snapshot(self, url: str, topic: bytes) -> tuple[int, int] | None:
        """(cursor it covers, bundles applied here then) of the last snapshot of a topic
        known to be at ``url``, if any."""
        rows = self.query(
            "SELECT covers, applied FROM published_snapshots WHERE url = ? AND topic = ?",
            (url, topic),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def note_published_snapshot(self, url: str, topic: bytes, covers: int, applied: int) -> None:
        """Note that ``url`` holds a snapshot of a topic covering up to ``covers``, made
        when this node had applied ``applied`` bundles (inside a write)."""
        self.run(
            "INSERT OR REPLACE INTO published_snapshots(url, topic, covers, applied) "
            "VALUES (?, ?, ?, ?)",
            (url, topic, covers, applied),
        )
