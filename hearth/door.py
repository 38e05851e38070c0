"""Every socket from the moment it is accepted: counted against the connection limits and
timed out until its WebSocket handshake is done (SECURITY.md §7: slowloris). Used by the
relay and by a node's direct listener (``hearth serve --listen``) alike.

aiohttp reads a request's headers for as long as a client takes to send them, and counts
no connection until a handler runs; a client that sends half a request and stops holds a
descriptor for ever, and a thousand of them exhaust a server's descriptors. So each
accepted socket passes a :class:`Door` first (no I/O, the clock passed in): it is refused
at once past ``per_address`` sockets from one address (the relay's
``max_connections_per_ip``); past ``max_sockets`` in all, the oldest socket still in its
handshake is dropped to make room (or, if none is, the new one refused); and a socket is
dropped when it has not finished its handshake (a relay's hello/welcome exchange, a
listener's device proof) within ``timeout_s``. :class:`Doorway` is the asyncio protocol
that puts aiohttp's own protocol for a socket behind the door.

Sockets from a relay's trusted proxy (``trusted_proxies``) are not counted per address
here: they carry many clients, told apart only once their request is read
(relay/forwarded.py); the proxy must bound what each client holds open before that.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Door", "Doorway"]


@dataclass
class Door:
    """Which sockets are open, from where, and until when each may take to get through."""

    max_sockets: int
    per_address: int
    timeout_s: float
    clock: Callable[[], float]
    # Whether an address is a proxy of ours (many clients: not limited per address).
    from_proxy: Callable[[str], bool] = lambda address: False
    # Whether the operator banned an address (refused before a byte of it is read).
    banned: Callable[[str], bool] = lambda address: False
    # Who an address is for the per-address limit (the relay: an IPv6 address's /64).
    counted_as: Callable[[str], str] = lambda address: address
    _open: dict[object, tuple[str, float]] = field(default_factory=dict)
    _from: Counter[str] = field(default_factory=Counter)
    _pending: dict[object, None] = field(default_factory=dict)  # not through yet, oldest first

    def enter(self, key: object, address: str) -> tuple[str | None, object | None]:
        """A socket was accepted: why it is refused (``None``: it may stay), and a socket
        to drop to make room for it (``None``: none).

        When every place is taken, the oldest socket still in its handshake makes room: a
        client that completes its handshake in milliseconds always gets in, and sockets
        sent from many addresses to sit half-open (a slowloris from many) only push each
        other out, instead of shutting honest clients out until they time out.
        """
        if self.from_proxy(address):
            pass  # the clients behind it are told apart once their request is read
        elif self.banned(address):
            return "banned", None
        else:
            address = self.counted_as(address)
            if self._from[address] >= self.per_address:
                return "connection_limit", None
        evicted: object | None = None
        if len(self._open) >= self.max_sockets:
            if not self._pending:
                return "connection_limit", None
            evicted = next(iter(self._pending))
            self.left(evicted)
        self._open[key] = (address, self.clock() + self.timeout_s)
        self._pending[key] = None
        self._from[address] += 1
        return None, evicted

    def through(self, key: object) -> None:
        """The socket finished its handshake: no deadline any more."""
        if key in self._open:
            self._open[key] = (self._open[key][0], math.inf)
            self._pending.pop(key, None)

    def left(self, key: object) -> None:
        """The socket closed (or was dropped)."""
        entry = self._open.pop(key, None)
        self._pending.pop(key, None)
        if entry is not None:
            self._from[entry[0]] -= 1
            if self._from[entry[0]] <= 0:
                del self._from[entry[0]]

    def overdue(self) -> list[tuple[object, str]]:
        """The sockets past their deadline, with their addresses (to be dropped)."""
        now = self.clock()
        return [(key, address) for key, (address, until) in self._open.items() if until < now]

    def __len__(self) -> int:
        return len(self._open)


class Doorway(asyncio.Protocol):
    """One accepted socket: through the :class:`Door` first, then aiohttp's protocol."""

    def __init__(
        self,
        inner: asyncio.Protocol,
        door: Door,
        refused: Callable[[str, str], None],
    ) -> None:
        self.inner = inner
        self.door = door
        self.refused = refused  # (reason, address): counted and logged by the caller
        self.entered = False
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        reason, evicted = self.door.enter(transport, address)
        if isinstance(evicted, asyncio.Transport):
            peer = evicted.get_extra_info("peername")
            self.refused("handshake_evicted", str(peer[0]) if isinstance(peer, tuple) else "?")
            evicted.abort()
        if reason is not None:
            self.refused(reason, address)
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        self.entered = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.entered:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.entered else None

    def pause_writing(self) -> None:
        if self.entered:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.entered:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.door.left(self.transport)
        if self.entered:
            self.entered = False
            self.inner.connection_lost(exc)
