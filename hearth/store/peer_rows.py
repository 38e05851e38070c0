"""The store's part for the peers this node dials: their addresses, the device key each
proved, the version vector each last reported, and how far behind a relay or peer is.

``hearth/net/dialled_peers.py`` checks what a member typed and says what it means; this
module only keeps and finds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from hearth.store.statements import Statements

__all__ = ["PeerRows"]


class PeerRows(Statements):
    """The dialled peers, as stored."""

    def add_peer(self, url: str, now_ms: int) -> None:
        """Remember a peer's address (inside a write); one known already stays as it is."""
        self.run("INSERT OR IGNORE INTO peers(url, added_at) VALUES (?, ?)", (url, now_ms))

    def peer_urls(self) -> list[str]:
        """Every peer's address, in the order they were added."""
        return [str(url) for (url,) in self.query("SELECT url FROM peers ORDER BY added_at, url")]

    def is_peer(self, url: str) -> bool:
        """Whether ``url`` is one of the peers this node dials."""
        return bool(self.query("SELECT 1 FROM peers WHERE url = ?", (url,)))

    def forget_peer(self, url: str) -> None:
        """Forget a peer and what it last reported having (inside a write)."""
        self.run("DELETE FROM peers WHERE url = ?", (url,))
        self.run("DELETE FROM peer_have WHERE url = ?", (url,))

    def replace_peer_has(self, url: str, group_id: str, have: Mapping[bytes, int]) -> None:
        """Keep the version vector a peer reported for a group in place of the one before
        (inside a write)."""
        self.run("DELETE FROM peer_have WHERE url = ? AND group_id = ?", (url, group_id))
        for author, seq in have.items():
            self.run(
                "INSERT INTO peer_have(url, group_id, author, seq) VALUES (?, ?, ?, ?)",
                (url, group_id, author, seq),
            )

    def set_peer_device(self, url: str, device: bytes) -> None:
        """Keep the device key a peer proved (inside a write; nothing for an unknown url)."""
        self.run("UPDATE peers SET device = ? WHERE url = ?", (device, url))

    def peer_device(self, url: str) -> bytes | None:
        """The device key the peer at ``url`` last proved, if it has."""
        rows = self.query("SELECT device FROM peers WHERE url = ?", (url,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def count_not_at_relay(self, url: str, group_id: str) -> int:
        """How many of a group's bundles the relay at ``url`` is not known to have."""
        rows = self.query(
            "SELECT COUNT(*) FROM bundles WHERE group_id = ? AND id NOT IN "
            "(SELECT bundle_id FROM relay_has WHERE url = ?)",
            (group_id, url),
        )
        return int(rows[0][0])

    def count_not_at_peer(self, url: str, group_id: str) -> int:
        """How many of a group's bundles the peer at ``url`` is not known to have: not
        sent to it, and beyond the version vector it last reported."""
        rows = self.query(
            "SELECT COUNT(*) FROM bundles b WHERE group_id = ? AND id NOT IN "
            "(SELECT bundle_id FROM relay_has WHERE url = ?) AND seq > COALESCE("
            "(SELECT seq FROM peer_have p WHERE p.url = ? AND p.group_id = b.group_id "
            "AND p.author = b.author), 0)",
            (group_id, url, url),
        )
        return int(rows[0][0])
