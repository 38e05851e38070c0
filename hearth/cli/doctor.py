"""``hearth doctor``: check a node end to end and say in plain words what is wrong.

Each check returns a :class:`Finding`: what was checked, whether it is fine, and what to do
if not. Nothing here changes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from hearth.errors import HearthError
from hearth.neighbourhood import participation
from hearth.net.connect import CONNECT_TIMEOUT_S
from hearth.net.dialled_peers import list_peers
from hearth.net.sync_client import sync_relay
from hearth.node.identity import load_identity
from hearth.node.node import Node
from hearth.validity.alerts import admin_alerts
from hearth.validity.intake import damage
from hearth.validity.joins import claim_standing
from hearth.values import counted, format_time

__all__ = ["Finding", "check_node", "examine", "finding_lines"]

_CLOCK_SKEW_MS = 5 * 60_000
_DAMAGE_RECENT_MS = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Finding:
    """The result of one check."""

    check: str
    ok: bool
    detail: str
    advice: str = ""


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "/info", "", ""))


async def _relay_clock(url: str, timeout: float) -> int | None:
    """The relay's idea of the time (from its HTTP Date header), in ms."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(_http_url(url), timeout=aiohttp.ClientTimeout(total=timeout)) as response,
        ):
            date = response.headers.get("Date")
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
        return None
    return int(parsedate_to_datetime(date).timestamp() * 1000) if date else None


def _neighbourhoods(node: Node, group_id: str, group_name: str) -> list[Finding]:
    """Where the group stands in each of its neighbourhoods."""
    findings = []
    for membership in participation.memberships(node, group_id):
        standing = participation.standing(node, membership)
        said, advice = participation.STANDINGS[standing]
        findings.append(
            Finding(
                f"{group_name}: neighbourhood {membership.name}", standing == "in", said, advice
            )
        )
    return findings


def _damage(node: Node) -> list[Finding]:
    """Sources that sent damaged bundles (R16): fine in the end, since each is read again,
    but a relay or a link that keeps doing it is worth replacing."""
    recent = node.clock.now_ms() - _DAMAGE_RECENT_MS
    return [
        Finding(
            f"damage from {d.source}",
            d.last_at < recent,
            f"{counted(d.count, 'bundle')} arrived damaged (the last on {format_time(d.last_at)}); "
            "each is read again, from there or elsewhere",
            ""
            if d.last_at < recent
            else "If this goes on, the connection or the relay is at fault: add another "
            "relay (`hearth relay add`) and tell its operator.",
        )
        for d in damage(node)
    ]


def examine(
    node: Node, *, timeout: float = 10.0, checking: Callable[[str], None] = lambda _: None
) -> list[Finding]:
    """Every check, in order: store, keys, groups, relays, gaps, clock. ``checking`` is told
    of each relay or peer before it is tried (the checks that can take seconds)."""
    return asyncio.run(check_node(node, timeout=timeout, checking=checking))


async def check_node(
    node: Node, *, timeout: float = 10.0, checking: Callable[[str], None] = lambda _: None
) -> list[Finding]:
    """:func:`examine` in a running event loop (the app's)."""
    findings = _store_and_keys(node)
    peers = list_peers(node.store)
    for group in node.groups():
        findings += await _group(node, group.id, group.name, peers, timeout, checking)
    findings += _damage(node)
    groups = [g.id for g in node.groups()]
    for url in peers:
        checking(url)
        report = await sync_relay(node, url, groups, timeout=timeout, peer=True)
        findings.append(
            Finding(f"peer {url}", True, "reachable, and it shares our group")
            if report.ok
            else Finding(
                f"peer {url}",
                False,
                f"not reached ({report.error})",
                "Is `hearth serve --listen` running there? Or remove it: `hearth peer remove`.",
            )
        )
    return findings


def _store_and_keys(node: Node) -> list[Finding]:
    """Whether the store is sound and the keys match the identity."""
    problems = node.store.integrity_problems()
    findings = [
        Finding(
            "store",
            not problems,
            "the local store is sound"
            if not problems
            else f"the store reports damage: {problems[0]}",
            "Copy the home folder somewhere safe, then rebuild by joining the group again."
            if problems
            else "",
        )
    ]
    try:
        load_identity(node.home)
        findings.append(Finding("keys", True, "your keys match your identity"))
    except HearthError as exc:
        findings.append(Finding("keys", False, str(exc), "Restore the keys folder from a copy."))
    return findings


async def _group(
    node: Node,
    group_id: str,
    name: str,
    peers: list[str],
    timeout: float,
    checking: Callable[[str], None],
) -> list[Finding]:
    """One group: its relays (each tried), its joining, neighbourhoods, alerts and gaps."""
    findings = []
    relays = node.view(group_id).relays()
    if not relays:
        findings.append(
            Finding(
                f"{name}: relays",
                bool(peers),
                "the group lists no relays" + ("; it syncs with peers only" if peers else ""),
                "Add one: `hearth relay add ws://HOST:PORT`"
                + (" (members away from this network cannot sync otherwise)." if peers else "."),
            )
        )
    for url in relays:
        checking(url)
        findings += await _relay(node, group_id, name, url, timeout)
    joining = claim_standing(node, group_id)
    if joining:
        findings.append(Finding(f"{name}: joining", False, joining))
    findings += _neighbourhoods(node, group_id, name)
    for alert in admin_alerts(node, group_id):
        findings.append(Finding(f"{name}: {alert.kind}", False, alert.what, alert.advice))
    gaps = len(node.feeds.waiting(group_id))
    findings.append(
        Finding(
            f"{name}: gaps",
            gaps == 0,
            "nothing is missing"
            if gaps == 0
            else f"{counted(gaps, 'change')} {'waits' if gaps == 1 else 'wait'} for earlier "
            "ones not yet received",
            ""
            if gaps == 0
            else "Sync with another relay or member: `hearth relay add`, `hearth sync`.",
        )
    )
    return findings


async def _relay(node: Node, group_id: str, name: str, url: str, timeout: float) -> list[Finding]:
    """One of a group's relays, tried: does it take our bundles, and is its clock near ours."""
    report = await sync_relay(node, url, [group_id], timeout=timeout)
    if report.ok and not report.refused:
        found = Finding(f"{name}: {url}", True, "reachable, and it takes the group's changes")
    elif report.ok:
        found = Finding(
            f"{name}: {url}",
            False,
            f"reachable but refusing: {report.refused[0]}",
            "Ask the relay's operator, or add another relay.",
        )
    else:
        found = Finding(
            f"{name}: {url}",
            False,
            f"not reachable ({report.error})",
            "Check the address and your connection; changes wait safely until a relay is reached.",
        )
    if not report.ok:  # its clock cannot be read either: no second wait for it
        return [found]
    relay_now = await _relay_clock(url, min(timeout, CONNECT_TIMEOUT_S))
    if relay_now is None or abs(relay_now - node.clock.now_ms()) <= _CLOCK_SKEW_MS:
        return [found]
    minutes = abs(relay_now - node.clock.now_ms()) // 60_000
    return [
        found,
        Finding(
            "clock",
            False,
            f"this device's clock is {minutes} minutes off {url}'s",
            "Set the date and time; dates you record depend on it.",
        ),
    ]


def finding_lines(findings: list[Finding]) -> list[str]:
    """The findings as ``hearth doctor`` and the app show them: one line each, its advice
    on the next."""
    lines = []
    for f in findings:
        lines.append(f"{'ok ' if f.ok else 'BAD'}  {f.check}: {f.detail}")
        if f.advice:
            lines.append(f"     → {f.advice}")
    return lines
