"""Opening a WebSocket to a relay or a peer, with waits a person can live with.

A relay that accepts the connection and then says nothing (a wrong port on a busy host,
a firewall that swallows packets, a hung server) must not leave a member looking at a
silent terminal for minutes: connecting gives up after :data:`CONNECT_TIMEOUT_S`, the
relay's first answer after :data:`HANDSHAKE_TIMEOUT_S`, each with a plain reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp

from hearth.errors import TransportError
from hearth.protocol.frames import MAX_FRAME

__all__ = ["CONNECT_TIMEOUT_S", "HANDSHAKE_TIMEOUT_S", "answer_within", "open_websocket"]

CONNECT_TIMEOUT_S = 5.0
HANDSHAKE_TIMEOUT_S = 5.0

T = TypeVar("T")


async def open_websocket(
    http: aiohttp.ClientSession, url: str, *, heartbeat: float = 30
) -> aiohttp.ClientWebSocketResponse[bool]:
    """A WebSocket to ``url``, or :class:`TransportError` once it has not opened within
    :data:`CONNECT_TIMEOUT_S`."""

    async def connect() -> aiohttp.ClientWebSocketResponse[bool]:
        return await http.ws_connect(
            url, max_msg_size=MAX_FRAME, heartbeat=heartbeat, autoping=True
        )

    try:
        return await asyncio.wait_for(connect(), CONNECT_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise TransportError(
            f"it took the connection but did not answer within {CONNECT_TIMEOUT_S:g} s: it "
            "may be down or overloaded, or not a Hearth relay; check the address"
        ) from None


async def answer_within(waiting: Awaitable[T]) -> T:
    """The relay's first answer (its welcome), or :class:`TransportError` once it has
    not come within :data:`HANDSHAKE_TIMEOUT_S`."""
    try:
        return await asyncio.wait_for(waiting, HANDSHAKE_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise TransportError(
            f"it connected but did not greet us within {HANDSHAKE_TIMEOUT_S:g} s: it may "
            "not be a Hearth relay, or it is overloaded"
        ) from None
