"""The direct peers this node dials (``hearth peer add``) and what each last said it has.

Unlike relays, which a group lists in its ledger for every member, peers belong to this
node: another member's laptop in the same shed is worth dialling from here, not from
everyone's phone. A peer is dialled for every group of this node; it serves the ones it
shares.
"""

from __future__ import annotations

from collections.abc import Mapping

from hearth.errors import NotFound
from hearth.ledger.ledger import check_relay_url
from hearth.store import Store

__all__ = [
    "LISTENING_AT",
    "add_peer",
    "list_peers",
    "note_peer_device",
    "note_peer_has",
    "peer_device",
    "remove_peer",
    "waiting_for",
]

LISTENING_AT = "listening_at"  # meta key: this home's `serve --listen` address while it runs


def add_peer(store: Store, url: str, now_ms: int) -> str:
    """Remember a peer's address; returns it as stored."""
    url = check_relay_url(url, kind="peer")
    with store.write():
        store.run("INSERT OR IGNORE INTO peers(url, added_at) VALUES (?, ?)", (url, now_ms))
    return url


def list_peers(store: Store) -> list[str]:
    """Every peer's address, in the order they were added."""
    return [str(url) for (url,) in store.query("SELECT url FROM peers ORDER BY added_at, url")]


def remove_peer(store: Store, url: str) -> None:
    """Forget a peer."""
    url = url.strip()
    if not store.query("SELECT 1 FROM peers WHERE url = ?", (url,)):
        raise NotFound(f"{url} is not one of this node's peers (see `hearth peer list`).")
    with store.write():
        store.run("DELETE FROM peers WHERE url = ?", (url,))
        store.run("DELETE FROM peer_have WHERE url = ?", (url,))


def note_peer_has(store: Store, url: str, group_id: str, have: Mapping[bytes, int]) -> None:
    """Remember the version vector a peer reported for a group."""
    with store.write():
        store.run("DELETE FROM peer_have WHERE url = ? AND group_id = ?", (url, group_id))
        for author, seq in have.items():
            store.run(
                "INSERT INTO peer_have(url, group_id, author, seq) VALUES (?, ?, ?, ?)",
                (url, group_id, author, seq),
            )


def note_peer_device(store: Store, url: str, device: bytes) -> None:
    """Remember the device key a peer proved (nothing, for an address not added as a peer:
    one found on the LAN)."""
    with store.write():
        store.run("UPDATE peers SET device = ? WHERE url = ?", (device, url))


def peer_device(store: Store, url: str) -> bytes | None:
    """The device key the peer at ``url`` last proved, if it has."""
    rows = store.query("SELECT device FROM peers WHERE url = ?", (url,))
    return bytes(rows[0][0]) if rows and rows[0][0] is not None else None


def waiting_for(store: Store, url: str, group_id: str, *, peer: bool) -> int:
    """How many of a group's bundles this relay or peer is not known to have."""
    if not peer:
        rows = store.query(
            "SELECT COUNT(*) FROM bundles WHERE group_id = ? AND id NOT IN "
            "(SELECT bundle_id FROM relay_has WHERE url = ?)",
            (group_id, url),
        )
    else:  # and beyond the version vector it last reported
        rows = store.query(
            "SELECT COUNT(*) FROM bundles b WHERE group_id = ? AND id NOT IN "
            "(SELECT bundle_id FROM relay_has WHERE url = ?) AND seq > COALESCE("
            "(SELECT seq FROM peer_have p WHERE p.url = ? AND p.group_id = b.group_id "
            "AND p.author = b.author), 0)",
            (group_id, url, url),
        )
    return int(rows[0][0])
