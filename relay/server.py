"""The relay's aiohttp application: WebSockets around :class:`~relay.core.RelayCore`, and
the operator endpoints.

Protocol summary (``docs/protocol.md``): the client says ``hello``, the relay answers
``welcome`` with its limits; then the client may ``register`` a topic with its relay key,
``subscribe`` after an arrival cursor (the relay sends every stored bundle after it, then
``caught_up``, then new ones live as ``deliver``), and ``publish`` bundles (checked for
size, relay signature, rate and quota, stored durably, answered with ``ack``, passed to
every other subscriber). Refusals are ``error`` frames; a malformed frame closes that
connection only. The relay never sees inside a bundle.

This module only moves bytes: each connection has a reader (frames into the core) and a
writer (the core's frames out, in order, catch-up pages included), and a client whose
unsent frames pass the outbound buffer limit is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Union

from aiohttp import WSCloseCode, WSMsgType, web

from hearth.errors import HearthError, StorageError
from hearth.protocol.connection import CLOSE_POLICY, CLOSE_PROTOCOL
from hearth.protocol.frames import PROTOCOL_VERSION, Deliver, Frame
from relay.config import RelayConfig
from relay.core import CatchUp, CloseClient, Output, RelayCore
from relay.logs import client_tag
from relay.metrics import Metrics
from relay.storage import RelayStore

__all__ = ["CONFIG", "CORE", "make_app"]

log = logging.getLogger(__name__)

_BATCH_WINDOW_S = 0.002  # how long a batch of publishes gathers before one commit

_Item = Union[Frame, CatchUp, None]  # noqa: UP007 - None stops the writer


@dataclass(eq=False)
class Link:
    """One WebSocket and the frames waiting to go out on it."""

    ws: web.WebSocketResponse
    ip: str
    outbox: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)
    queued_bytes: int = 0
    sent_through: dict[bytes, int] = field(default_factory=dict)  # topic -> cursor
    closing: asyncio.Task[bool] | None = None


CONFIG = web.AppKey("config", RelayConfig)
CORE = web.AppKey("core", RelayCore)
LINKS = web.AppKey("links", dict[int, Link])
FLUSH = web.AppKey("flush", asyncio.Event)


def client_address(request: web.Request, config: RelayConfig) -> str:
    """The address limits count by: the proxy's word for it if we trust the proxy."""
    if config.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.remote or "?"


def make_app(config: RelayConfig, store: RelayStore) -> web.Application:
    """The relay as an aiohttp application."""

    def disk_fraction() -> float:
        usage = shutil.disk_usage(store.path.parent)
        return usage.used / usage.total

    app = web.Application()
    app[CONFIG] = config
    app[CORE] = RelayCore(
        config,
        store,
        clock=time.monotonic,
        wall_clock=time.time,
        disk_fraction=disk_fraction,
        metrics=Metrics(),
    )
    app[LINKS] = {}
    app[FLUSH] = asyncio.Event()
    app.cleanup_ctx.append(_flusher)
    app.cleanup_ctx.append(_pruner)
    app.router.add_get("/", websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/info", info)
    app.on_shutdown.append(_close_clients)
    return app


async def _flusher(app: web.Application) -> AsyncIterator[None]:
    """Commits published bundles in batches: one fsync for all that arrived together."""
    core, wanted = app[CORE], app[FLUSH]

    async def run() -> None:
        while True:
            await wanted.wait()
            wanted.clear()
            await asyncio.sleep(_BATCH_WINDOW_S)  # let messages arriving meanwhile join
            await _carry_out(app, core.flush())

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await _carry_out(app, core.flush())


async def _pruner(app: web.Application) -> AsyncIterator[None]:
    """Deletes what old snapshots cover, at start and then every ``prune_every_s``."""
    core = app[CORE]

    async def run() -> None:
        while True:
            try:
                core.prune()
            except StorageError as exc:
                log.warning("%s", exc)
            await asyncio.sleep(app[CONFIG].prune_every_s)

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_clients(app: web.Application) -> None:
    await _carry_out(app, app[CORE].flush())  # acknowledge what is already stored
    for link in list(app[LINKS].values()):
        await link.ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay shutting down")


async def healthz(request: web.Request) -> web.Response:
    """Alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to take writes: the store is writable and the disk is not nearly full."""
    core = request.app[CORE]
    problems = []
    if not core.store.writable():
        problems.append("store not writable")
    if core.disk_fraction() > core.config.disk_high_water:
        problems.append("disk above high-water mark")
    return web.json_response(
        {"ready": not problems, "problems": problems}, status=503 if problems else 200
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    core = request.app[CORE]
    topics, envelopes = core.store.counts()
    core.metrics.gauge("hearth_relay_connections", len(core.clients))
    core.metrics.gauge("hearth_relay_topics", topics)
    core.metrics.gauge("hearth_relay_bundles_stored", envelopes)
    return web.Response(text=core.metrics.render(), content_type="text/plain")


async def info(request: web.Request) -> web.Response:
    """What this relay is and the limits it enforces."""
    return web.json_response(
        {
            "software": "hearth-relay",
            "protocol": PROTOCOL_VERSION,
            "limits": request.app[CONFIG].limits(),
        }
    )


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """One client's WebSocket, from handshake to close."""
    app = request.app
    config, core, links = app[CONFIG], app[CORE], app[LINKS]
    ip = client_address(request, config)
    ws = web.WebSocketResponse(heartbeat=config.heartbeat_s, max_msg_size=config.max_frame_bytes)
    client = id(ws)  # unique while the connection lives, which is as long as it is used
    if not core.admit(client, ip):
        return web.Response(status=503, text="too many connections")
    link = Link(ws=ws, ip=ip)
    links[client] = link
    writer: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        writer = asyncio.create_task(_write_loop(app, client, link))
        await _read_loop(app, client, link)
    finally:
        told = core.gone(client)
        links.pop(client, None)
        await _carry_out(app, told)
        link.outbox.put_nowait(None)
        if writer is not None:
            await writer
        if not ws.closed:
            await ws.close()
    return ws


async def _read_loop(app: web.Application, client: int, link: Link) -> None:
    config, core = app[CONFIG], app[CORE]
    ws = link.ws
    deadline = time.monotonic() + config.handshake_timeout_s
    while not ws.closed:
        timeout = None if core.handshaken(client) else max(0.0, deadline - time.monotonic())
        try:
            message = await ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            core.reject("handshake_timeout", link.ip)
            await ws.close(code=CLOSE_POLICY, message=b"handshake took too long")
            return
        if message.type == WSMsgType.ERROR:
            core.reject("frame_too_big" if ws.close_code == 1009 else "ws_error", link.ip)
            return
        if message.type != WSMsgType.BINARY:
            if message.type == WSMsgType.TEXT:
                core.reject("bad_frame", link.ip)
                await ws.close(code=CLOSE_PROTOCOL, message=b"text frames are not the protocol")
            return
        await _carry_out(app, core.receive(client, message.data))
        if core.pending():
            app[FLUSH].set()


async def _carry_out(app: web.Application, outputs: list[Output]) -> None:
    config, links = app[CONFIG], app[LINKS]
    for output in outputs:
        link = links.get(output.client)
        if link is None:
            continue
        if isinstance(output, CloseClient):
            log.info(
                "closing a connection",
                extra={"client": client_tag(link.ip), "reason": output.reason},
            )
            await link.ws.close(code=output.code, message=output.reason.encode()[:120])
        elif isinstance(output, CatchUp):
            link.outbox.put_nowait(output)
        elif isinstance(output.frame, Deliver):
            size = len(output.frame.envelope)
            if link.queued_bytes + size > config.outbound_buffer_bytes:
                app[CORE].reject("slow_consumer", link.ip)
                link.outbox.put_nowait(None)
                link.closing = asyncio.create_task(
                    link.ws.close(code=CLOSE_POLICY, message=b"not reading fast enough")
                )
                continue
            link.queued_bytes += size
            link.outbox.put_nowait(output.frame)
        else:
            link.outbox.put_nowait(output.frame)


async def _write_loop(app: web.Application, client: int, link: Link) -> None:
    """Sends one client's frames in order, doing catch-ups where they fall."""
    core = app[CORE]
    try:
        while True:
            item = await link.outbox.get()
            if item is None or link.ws.closed:
                return
            if isinstance(item, CatchUp):
                await _catch_up(core, client, link, item)
                continue
            if isinstance(item, Deliver):
                link.queued_bytes -= len(item.envelope)
                if item.cursor <= link.sent_through.get(item.topic, 0):
                    continue  # already sent during a catch-up
                link.sent_through[item.topic] = item.cursor
                core.metrics.count("hearth_relay_bundles_out_total")
            await link.ws.send_bytes(core.encode(client, item))
    except (ConnectionResetError, HearthError) as exc:
        log.info("writer stopped: %s", exc, extra={"client": client_tag(link.ip)})


async def _catch_up(core: RelayCore, client: int, link: Link, item: CatchUp) -> None:
    cursor = min(item.after, core.store.newest(item.topic))
    for frame in core.catch_up(item):
        await link.ws.send_bytes(core.encode(client, frame))
        cursor = max(cursor, frame.cursor)
        core.metrics.count("hearth_relay_bundles_out_total")
    link.sent_through[item.topic] = max(cursor, link.sent_through.get(item.topic, 0))
    await link.ws.send_bytes(core.encode(client, core.caught_up(item.topic, cursor)))
