"""Keeping this relay linked to the peer relays its operator listed (DESIGN §6).

One task per peer address dials it, runs the link (``relay/links.py``) until it drops and
dials again with a growing, jittered delay, whatever ended the link. What flows over a link
— who proves what, which bundles go which way — is decided by
:class:`~relay.core.RelayCore`: the relay that answers must prove the id listed with its
address, and must list this one's id in its ``accept_peers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import aiohttp
from aiohttp import web

from relay.config import peer_address
from relay.links import CONFIG, CORE, Link, run_link

__all__ = ["keep_peers_linked"]

log = logging.getLogger(__name__)

_FIRST_RETRY_S = 1.0
_LAST_RETRY_S = 60.0
_STEADY_S = 60.0  # a link that lasted this long starts the delays over
_TASKS = web.AppKey("peer_tasks", list[asyncio.Task[None]])


def keep_peers_linked(app: web.Application) -> None:
    """Dial every configured peer once the app starts; stop before clients are closed."""

    async def start(app: web.Application) -> None:
        app[_TASKS] = [
            asyncio.create_task(_keep_linked(app, *peer_address(entry)))
            for entry in app[CONFIG].peers
        ]

    async def stop(app: web.Application) -> None:
        for task in app[_TASKS]:
            task.cancel()
        for task in app[_TASKS]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_shutdown.insert(0, stop)


async def _keep_linked(app: web.Application, url: str, relay_id: bytes) -> None:
    delay = _FIRST_RETRY_S
    timeout = aiohttp.ClientTimeout(total=None, connect=10.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            started = time.monotonic()
            try:
                await _link_once(app, session, url, relay_id)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                log.info("peer relay unreachable: %s (%s)", url, type(exc).__name__)
            except Exception:  # a bug or a store failure on one link must not end the loop
                log.exception("the link with peer relay %s failed; dialing again", url)
            if time.monotonic() - started > _STEADY_S:
                delay = _FIRST_RETRY_S
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, _LAST_RETRY_S)


async def _link_once(
    app: web.Application, session: aiohttp.ClientSession, url: str, relay_id: bytes
) -> None:
    """Dial ``url`` once and run the link until it ends, however it ends.

    The WebSocket upgrade has the handshake timeout as its deadline (a frozen relay accepts
    the connection in its kernel and answers nothing), and the link knows its socket, so
    that a peer that stops reading is dropped whole (``relay/links.py``, :func:`cut`).
    """
    config, core = app[CONFIG], app[CORE]
    ws = await asyncio.wait_for(
        session.ws_connect(url, heartbeat=config.heartbeat_s, max_msg_size=config.max_frame_bytes),
        config.handshake_timeout_s,
    )
    client = id(ws)
    log.info("linking with peer relay %s", url)
    link = Link(ws=ws, ip=f"peer {url}", transport=_transport_of(ws))
    await run_link(app, client, link, core.dial(client, url, relay_id))
    log.info("link with peer relay %s closed", url)


def _transport_of(ws: aiohttp.ClientWebSocketResponse[bool]) -> asyncio.BaseTransport | None:
    """A client WebSocket's socket. aiohttp has no public way to it; without it a link
    whose peer stopped reading could only be closed politely, which waits for ever."""
    connection = ws._response.connection
    return connection.transport if connection is not None else None
