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
        store.add_peer(url, now_ms)
    return url


def list_peers(store: Store) -> list[str]:
    """Every peer's address, in the order they were added."""
    return store.peer_urls()


def remove_peer(store: Store, url: str) -> None:
    """Forget a peer."""
    url = url.strip()
    if not store.is_peer(url):
        raise NotFound(f"{url} is not one of this node's peers (see `hearth peer list`).")
    with store.write():
        store.forget_peer(url)


def note_peer_has(store: Store, url: str, group_id: str, have: Mapping[bytes, int]) -> None:
    """Remember the version vector a peer reported for a group."""
    with store.write():
        store.replace_peer_has(url, group_id, have)


def note_peer_device(store: Store, url: str, device: bytes) -> None:
    """Remember the device key a peer proved (nothing, for an address not added as a peer:
    one found on the LAN)."""
    with store.write():
        store.set_peer_device(url, device)


def peer_device(store: Store, url: str) -> bytes | None:
    """The device key the peer at ``url`` last proved, if it has."""
    return store.peer_device(url)


def waiting_for(store: Store, url: str, group_id: str, *, peer: bool) -> int:
    """How many of a group's bundles this relay or peer is not known to have."""
    if not peer:
        return store.count_not_at_relay(url, group_id)
    return store.count_not_at_peer(url, group_id)  # also beyond what it last reported
