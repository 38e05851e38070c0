"""What the app shows about sharing, in words a member understands.

No "relay", "bundle" or "epoch" on screen: a member sees whether their changes have
reached the others, when that last happened, and whether anything needs attention.
"""

from __future__ import annotations

from dataclasses import dataclass

from hearth.node import Node
from hearth.peers import list_peers, waiting_for
from hearth.retraction import removal_notices
from hearth.values import format_time

__all__ = ["SyncState", "sync_state"]

RECENT_MS = 3 * 60 * 1000  # a successful exchange this recent counts as "up to date"


@dataclass(frozen=True, slots=True)
class SyncState:
    """The sharing state of one group."""

    words: str  # one line: offline / connecting / up to date as of …
    waiting: int  # my changes not yet passed on
    gaps: int  # changes from others held back until earlier ones arrive
    online: bool
    taken_back: tuple[str, ...] = ()  # recent notes of edits that did not count after all


def sync_state(node: Node, group_id: str, now_ms: int) -> SyncState:
    """How this group's sharing stands right now."""
    links = [(url, False) for url in node.view(group_id).relays()]
    links += [(url, True) for url in list_peers(node.store)]
    gaps = len(node.feeds.waiting(group_id))
    taken_back = tuple(what for _, what in removal_notices(node))
    if not links:
        return SyncState(
            "Only on this device: nothing to share with yet", 0, gaps, False, taken_back
        )
    waiting = min(waiting_for(node.store, url, group_id, peer=peer) for url, peer in links)
    rows = node.store.query(
        "SELECT MAX(last_ok), MAX(last_attempt) FROM sync_log WHERE url IN "  # noqa: S608
        f"({', '.join('?' for _ in links)})",
        tuple(url for url, _ in links),
    )
    last_ok, last_attempt = rows[0] if rows else (None, None)
    if last_ok is not None and now_ms - int(last_ok) < RECENT_MS:
        words = f"Up to date as of {format_time(int(last_ok))}"
        online = True
    elif last_attempt is None:
        words = "Connecting…"
        online = False
    else:
        since = f" (last shared {format_time(int(last_ok))})" if last_ok else ""
        words = f"Offline{since}"
        online = False
    return SyncState(words, waiting, gaps, online, taken_back)
