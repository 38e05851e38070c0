"""Syncing a node now, everywhere it syncs (what ``hearth sync`` and the app's "Sync now"
do), and the plain words for how it went."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from hearth.group import member_changes
from hearth.group.rotation import keep_keys
from hearth.neighbourhood import participation
from hearth.net.dialled_peers import list_peers
from hearth.node.node import Node
from hearth.validity.intake import confirm_joins
from hearth.validity.retraction import removal_notices
from hearth.values import counted, format_time

if TYPE_CHECKING:  # networking loads aiohttp: only syncing itself imports it
    from hearth.net.sync_client import RelayReport

__all__ = ["merged", "sync_everywhere", "sync_now", "sync_report"]

_MAX_PASSES = 4


async def _sync_passes(
    node: Node,
    groups: list[str],
    *,
    timeout: float,
    on_progress: Callable[[Sequence[RelayReport]], None] | None = None,
) -> list[RelayReport]:
    """Sync with every relay, then every peer; again while a pass brings news of more
    relays or of a new group key (whose topic must be synced everywhere too), or made
    this node write something."""
    from hearth.net.sync_client import sync_relays

    reports: list[RelayReport] = []
    tried: set[tuple[str, bool]] = set()
    topics: set[bytes] = set()
    me = node.identity.device_key.public
    written = {g: node.feeds.head(g, me) for g in groups}
    for _ in range(_MAX_PASSES):
        # What this node wrote while taking bundles in (a join it confirmed, R14) goes
        # out in this sync too, not the next one.
        news = any(node.feeds.head(g, me) != head for g, head in written.items())
        written = {g: node.feeds.head(g, me) for g in groups}
        for group_id in groups:
            node.claim_device(group_id)  # a new device, once its member's entry is here
            confirm_joins(node, group_id)  # joins to invites made here (R14)
            keep_keys(node, group_id)
            # Handoffs agreed or fulfilled in a neighbourhood, into the ledger and back.
            news = participation.reconcile(node, group_id) > 0 or news
        now = {keys.topic for g in groups for _, keys in node.feeds.epochs(g)}
        now |= {t for g in groups for t in participation.topics(node, g)}
        if now != topics or news:
            tried.clear()
            topics = now
        relays = {(url, False) for g in groups for url in node.view(g).relays()}
        peers = {(url, True) for url in list_peers(node.store)}
        todo = sorted((relays | peers) - tried, key=lambda p: (p[1], p[0]))
        if not todo:
            break
        tried.update(todo)
        for peer in (False, True):
            urls = [url for url, is_peer in todo if is_peer is peer]
            if urls:
                reports += await sync_relays(
                    node, urls, groups, timeout=timeout, peers=peer, on_progress=on_progress
                )
    return reports


async def sync_everywhere(
    node: Node,
    groups: list[str],
    *,
    timeout: float,
    on_progress: Callable[[Sequence[RelayReport]], None] | None = None,
) -> list[RelayReport]:
    """Sync the groups with every relay and peer, in a running event loop (the app's);
    one report per place."""
    return merged(await _sync_passes(node, groups, timeout=timeout, on_progress=on_progress))


def sync_now(
    node: Node,
    groups: list[str],
    *,
    timeout: float,
    on_progress: Callable[[Sequence[RelayReport]], None] | None = None,
) -> list[RelayReport]:
    """Sync the groups everywhere they sync, as `hearth sync` does; one report per place."""
    return asyncio.run(sync_everywhere(node, groups, timeout=timeout, on_progress=on_progress))


def merged(reports: list[RelayReport]) -> list[RelayReport]:
    """One report per relay or peer: counts added up, the outcome of the last exchange."""
    by_url: dict[tuple[str, bool], RelayReport] = {}
    for report in reports:
        first = by_url.setdefault((report.url, report.peer), report)
        if first is not report:
            for count in ("sent", "received", "applied", "rejected", "damaged"):
                setattr(first, count, getattr(first, count) + getattr(report, count))
            first.ok, first.error = report.ok, report.error
    return list(by_url.values())


def sync_report(
    node: Node,
    groups: list[str],
    reports: list[RelayReport],
    started_ms: int,
    *,
    unit: str = "bundle",
) -> tuple[list[str], list[str]]:
    """How a sync went, in plain words: a line per relay or peer and the totals, counting
    in ``unit`` (the app says "change"); then what the member is told about their own
    standing (removed, changes taken back) since ``started_ms``."""
    lines = []
    for r in reports:
        if r.ok:
            damaged = (
                f" ({counted(r.damaged, unit)} arrived damaged: read again next time)"
                if r.damaged
                else ""
            )
            lines.append(f"{r.url}: sent {r.sent}, received {r.received}{damaged}")
        else:
            lines.append(f"{r.url}: not reached — {r.error}")
    sent = sum(r.sent for r in reports)
    received = sum(r.received for r in reports)
    lines.append(f"Sent {counted(sent, unit)} and received {received}.")
    told = [note for g in groups if (note := member_changes.standing_note(node, g))]
    for at, what in removal_notices(node, since_ms=started_ms):
        told.append(f"{what} ({format_time(at)}).")
    return lines, told
