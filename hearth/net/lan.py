"""Finding other nodes of our groups on the local network by mDNS (zeroconf).

A node that listens for peers (``hearth serve --listen``) announces a ``_hearth._tcp``
service under a random name that changes every run, carrying only the beacon tags of its
groups (``hearth.protocol.beacon``) — no group id, no member name, no host name. It also
browses for other such services; when one carries a tag of one of our groups, it becomes
a peer to dial for as long as it is announced. Of two nodes that find each other, only
the one with the smaller service name dials, so they hold one connection, not two.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from hearth.node.node import Node
from hearth.protocol.beacon import beacon_tag, groups_beaconed

__all__ = ["SERVICE_TYPE", "LanPresence", "find_invite"]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_hearth._tcp.local."
_ANY = ("", "0.0.0.0", "::")  # noqa: S104 (recognised, not bound to)


class LanPresence:
    """Our announcement on the LAN and the peers of our groups found there."""

    def __init__(
        self, node: Node, host: str, port: int, invites: Callable[[], list[int]] = list
    ) -> None:
        self.node = node
        self.invites = invites  # the numbers of invite mailboxes open at our listener
        self.port = port
        self.addresses = _addresses(host)
        interfaces = InterfaceChoice.All if host in _ANY else [host]
        self.name = f"hearth-{secrets.token_hex(6)}"
        self.found: dict[str, str] = {}  # service name -> ws:// address to dial
        self._zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def full_name(self) -> str:
        """Our service's mDNS name."""
        return f"{self.name}.{SERVICE_TYPE}"

    async def start(self) -> None:
        """Announce ourselves and start looking for others."""
        self._info = self._service_info()
        await self._zeroconf.async_register_service(self._info)
        self._browser = AsyncServiceBrowser(
            self._zeroconf.zeroconf, [SERVICE_TYPE], handlers=[self._on_change]
        )

    async def refresh(self) -> None:
        """Re-announce when the tags have moved on (every ten minutes, or a new group)."""
        info = self._service_info()
        if self._info is not None and info.properties != self._info.properties:
            self._info = info
            await self._zeroconf.async_update_service(info)

    async def close(self) -> None:
        """Withdraw the announcement and stop looking."""
        for task in self._tasks:
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        await self._zeroconf.async_close()  # also unregisters our service

    def _service_info(self) -> AsyncServiceInfo:
        now = self.node.clock.now_ms()
        tags = {
            f"t{i}": beacon_tag(self.node.feeds.current_keys(group.id).lan_key, now)
            for i, group in enumerate(self.node.groups())
        }
        open_invites = self.invites()
        if open_invites:  # the number of a code is no secret: the relay sees it too
            tags["invites"] = ",".join(str(n) for n in open_invites)
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self.full_name,
            addresses=[socket.inet_aton(a) for a in self.addresses],
            port=self.port,
            properties=tags,
            server=f"{self.name}.local.",
        )

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if name == self.full_name:
            return
        if state_change is ServiceStateChange.Removed:
            if self.found.pop(name, None) is not None:
                log.info("LAN peer %s went away", name)
            return
        task = asyncio.get_running_loop().create_task(self._look_at(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _look_at(self, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._zeroconf.zeroconf, 3000):
            return
        tags = [v.decode() for v in info.properties.values() if isinstance(v, bytes)]
        lan_keys = {g.id: self.node.feeds.current_keys(g.id).lan_key for g in self.node.groups()}
        shared = groups_beaconed(tags, lan_keys, self.node.clock.now_ms())
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if not shared or not addresses or info.port is None:
            self.found.pop(name, None)
            return
        if self.full_name > name:
            return  # the other node dials us
        url = f"ws://{addresses[0]}:{info.port}"
        if self.found.get(name) != url:
            log.info("found a node of %d of our groups on the LAN at %s", len(shared), url)
            self.found[name] = url


def _addresses(host: str) -> list[str]:
    """The IPv4 addresses to announce for a listener on ``host``."""
    if host not in _ANY:
        return [socket.gethostbyname(host)]
    found = [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
    ]
    return found or ["127.0.0.1"]


async def find_invite(nameplate: int, timeout: float) -> str | None:
    """The ``ws://`` address of a node on the local network holding the invite mailbox
    numbered ``nameplate`` (its ``hearth serve --listen`` announces it), if one turns up
    within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A fresh look each round: a node announces a new invite by updating what it
        # announced, and a cache filled a moment earlier would keep the old version.
        found = await _look_for_invite(nameplate, min(3.0, deadline - time.monotonic()))
        if found is not None:
            return found
    return None


async def _look_for_invite(nameplate: int, seconds: float) -> str | None:
    interfaces = sorted({"127.0.0.1", *_addresses("0.0.0.0")})  # noqa: S104 - any interface
    zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    names: set[str] = set()
    browser = AsyncServiceBrowser(
        zeroconf.zeroconf, [SERVICE_TYPE], handlers=[lambda name, **_: names.add(name)]
    )
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            for name in sorted(names):
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if not await info.async_request(zeroconf.zeroconf, 1000):
                    continue
                raw = info.properties.get(b"invites") or b""
                numbers = {int(n) for n in raw.decode().split(",") if n.isdigit()}
                addresses = info.parsed_addresses(IPVersion.V4Only)
                if nameplate in numbers and addresses and info.port is not None:
                    return f"ws://{addresses[0]}:{info.port}"
    finally:
        await browser.async_cancel()
        await zeroconf.async_close()
    return None
