"""What the app shows about sharing, in words a member understands.

No "relay", "bundle" or "epoch" on screen: a member sees whether their changes have
reached the others, when that last happened, and whether anything needs attention.
"""

from __future__ import annotations

from dataclasses import dataclass

from hearth.neighbourhood import participation
from hearth.neighbourhood.rules import Offer, Request
from hearth.net.dialled_peers import list_peers, waiting_for
from hearth.node.node import Node
from hearth.validity.alerts import AdminAlert, admin_alerts
from hearth.validity.joins import claim_standing
from hearth.validity.retraction import removal_notices
from hearth.values import format_date, format_time
from tui.wording import app_words

__all__ = ["Neighbourhoods", "SyncState", "neighbourhoods_of", "sync_state"]

RECENT_MS = 3 * 60 * 1000  # a successful exchange this recent counts as "up to date"


@dataclass(frozen=True, slots=True)
class SyncState:
    """The sharing state of one group."""

    words: str  # one line: offline / connecting / up to date as of …
    waiting: int  # my changes not yet passed on
    gaps: int  # changes from others held back until earlier ones arrive
    online: bool
    taken_back: tuple[str, ...] = ()  # recent notes of edits that did not count after all
    admin_alerts: tuple[AdminAlert, ...] = ()  # for an admin: membership to look at
    joining: str = ""  # how this device's own join stands, if it is not in yet


def sync_state(node: Node, group_id: str, now_ms: int) -> SyncState:
    """How this group's sharing stands right now."""
    links = [(url, False) for url in node.view(group_id).relays()]
    links += [(url, True) for url in list_peers(node.store)]
    gaps = len(node.feeds.waiting(group_id))
    taken_back = tuple(app_words(what) for _, what in removal_notices(node))
    broken = tuple(admin_alerts(node, group_id))
    joining = app_words(claim_standing(node, group_id))
    if not links:
        return SyncState(
            "Only on this device: nothing to share with yet",
            0,
            gaps,
            False,
            taken_back,
            broken,
            joining,
        )
    waiting = min(waiting_for(node.store, url, group_id, peer=peer) for url, peer in links)
    logged = node.store.sync_log([url for url, _ in links]).values()
    oks = [row.last_ok for row in logged if row.last_ok is not None]
    last_ok = max(oks) if oks else None
    # Up to date only through a link whose latest try worked, and recently: a relay that
    # answered two minutes ago and has failed since is not "up to date".
    reached = [
        row.last_ok
        for row in logged
        if row.last_ok is not None and not row.last_error and now_ms - row.last_ok < RECENT_MS
    ]
    if reached:
        words = f"Up to date as of {_when(max(reached), now_ms)}"
        online = True
    elif not any(row.last_attempt is not None for row in logged):
        words = "Connecting…"
        online = False
    else:
        since = f" (last shared {_when(last_ok, now_ms)})" if last_ok else ""
        words = f"Offline{since}"
        online = False
    return SyncState(words, waiting, gaps, online, taken_back, broken, joining)


def _when(ms: int, now_ms: int) -> str:
    """``14:02`` today, ``2026-11-28 14:02`` on another day."""
    shown = format_time(ms)
    return shown[11:] if format_date(ms) == format_date(now_ms) else shown


@dataclass(frozen=True, slots=True)
class Neighbourhoods:
    """What the group's neighbourhoods hold: who is in them, what is offered, what is asked."""

    summary: tuple[str, ...] = ()  # per neighbourhood: its name and groups
    offers: tuple[tuple[Offer, bool], ...] = ()  # open offers; True for our group's own
    requests: tuple[tuple[Request, Offer, str], ...] = ()  # with "incoming" or "outgoing"

    def others_offers(self) -> list[Offer]:
        """The open offers of neighbour groups (not ours)."""
        return [offer for offer, ours in self.offers if not ours]


def neighbourhoods_of(node: Node, group_id: str, now_ms: int) -> Neighbourhoods:
    """The group's neighbourhoods as they stand right now."""
    summary, offers = [], []
    for membership in participation.memberships(node, group_id):
        current = participation.state(node, membership)
        line = f"{membership.name}: {', '.join(sorted(current.groups.values()))}"
        if participation.standing(node, membership) == "no-key":
            line += " (your group's key was handed on twice: ask a group there for a new code)"
        summary.append(line)
        offers += [(o, o.group == membership.key.public) for o in current.open_offers(now_ms)]
    requests = [
        (item, current.offers[item.offer], direction)
        for _, current, item, direction in participation.requests(node, group_id)
    ]
    return Neighbourhoods(tuple(summary), tuple(offers), tuple(requests))
