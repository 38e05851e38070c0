"""The relay's aiohttp application: the WebSocket exchange and the operator endpoints.

Exchange (``docs/protocol.md``): the client says ``hello``, the relay answers ``welcome``
with its limits; then the client may ``register`` a topic with its relay key,
``subscribe`` to a topic after an arrival cursor (the relay sends every stored bundle
after it, then ``caught_up``, then new bundles live as ``deliver``), and ``publish``
bundles (the relay checks size, the topic's relay signature, rate and quota, stores the
bundle durably, answers ``ack`` with its cursor, and passes it to every subscriber).
Refusals are ``error`` frames with a code; a malformed frame closes that connection only.
The relay never sees inside a bundle.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, WSMsgType, web

from hearth.errors import HearthError, ProtocolError, StorageError
from hearth.protocol.bundle import parse_envelope, registration_valid
from hearth.protocol.connection import CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_TOO_BIG, Connection, Role
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    CaughtUp,
    Deliver,
    Error,
    Frame,
    Hello,
    Publish,
    Register,
    Subscribe,
    Welcome,
)
from relay.config import RelayConfig
from relay.metrics import Metrics
from relay.storage import RelayStore

__all__ = ["CONFIG", "STORE", "make_app"]

log = logging.getLogger(__name__)


class Hub:
    """Who is connected and subscribed to what."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.per_ip: defaultdict[str, int] = defaultdict(int)
        self.subscribers: defaultdict[bytes, set[Client]] = defaultdict(set)
        self.bad_signatures: defaultdict[str, list[float]] = defaultdict(list)
        self.blocked_until: dict[str, tuple[float, float]] = {}


CONFIG = web.AppKey("config", RelayConfig)
STORE = web.AppKey("store", RelayStore)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)


def client_tag(ip: str) -> str:
    """A client address as logs show it: hashed, never raw."""
    return hashlib.sha256(b"hearth-relay-log\0" + ip.encode()).hexdigest()[:12]


@dataclass(eq=False)
class Client:
    """One connected WebSocket and what it is subscribed to."""

    ws: web.WebSocketResponse
    ip: str
    conn: Connection = field(default_factory=lambda: Connection(Role.ACCEPTING))
    topics: dict[bytes, int] = field(default_factory=dict)  # topic -> cursor sent through
    tokens: float = 0.0
    refilled: float = field(default_factory=time.monotonic)
    queued_bytes: int = 0
    outbox: asyncio.Queue[tuple[bytes, bytes, int] | None] = field(default_factory=asyncio.Queue)
    closing: asyncio.Task[bool] | None = None


def make_app(config: RelayConfig, store: RelayStore) -> web.Application:
    """The relay as an aiohttp application."""
    app = web.Application()
    app[CONFIG] = config
    app[STORE] = store
    app[HUB] = Hub()
    app[METRICS] = Metrics()
    app.router.add_get("/", websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/info", info)
    app.on_shutdown.append(_close_clients)
    return app


async def _close_clients(app: web.Application) -> None:
    for client in list(app[HUB].clients):
        await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay shutting down")


async def healthz(request: web.Request) -> web.Response:
    """Alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to take writes: the store is writable and the disk is not nearly full."""
    store, config = request.app[STORE], request.app[CONFIG]
    usage = shutil.disk_usage(store.path.parent)
    problems = []
    if not store.writable():
        problems.append("store not writable")
    if usage.used / usage.total > config.disk_high_water:
        problems.append("disk above high-water mark")
    status = 503 if problems else 200
    return web.json_response({"ready": not problems, "problems": problems}, status=status)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    app = request.app
    topics, envelopes = app[STORE].counts()
    hub = app[HUB]
    app[METRICS].gauge("hearth_relay_connections", len(hub.clients))
    app[METRICS].gauge("hearth_relay_topics", topics)
    app[METRICS].gauge("hearth_relay_bundles_stored", envelopes)
    return web.Response(text=app[METRICS].render(), content_type="text/plain")


async def info(request: web.Request) -> web.Response:
    """What this relay is and the limits it enforces."""
    config = request.app[CONFIG]
    return web.json_response(
        {"software": "hearth-relay", "protocol": PROTOCOL_VERSION, "limits": config.limits()}
    )


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """One client's WebSocket, from handshake to close."""
    app = request.app
    config, hub, m = app[CONFIG], app[HUB], app[METRICS]
    ip = request.remote or "?"
    if (
        len(hub.clients) >= config.max_connections
        or hub.per_ip[ip] >= config.max_connections_per_ip
    ):
        m.count("hearth_relay_rejections_total", reason="connection_limit")
        return web.Response(status=503, text="too many connections")
    ws = web.WebSocketResponse(heartbeat=config.heartbeat_s, max_msg_size=config.max_frame_bytes)
    await ws.prepare(request)
    client = Client(ws=ws, ip=ip, tokens=float(config.publish_burst))
    hub.clients.add(client)
    hub.per_ip[ip] += 1
    m.count("hearth_relay_connections_total")
    writer = asyncio.create_task(_write_loop(app, client))
    try:
        await _read_loop(app, client)
    finally:
        hub.clients.discard(client)
        hub.per_ip[ip] -= 1
        if hub.per_ip[ip] <= 0:
            del hub.per_ip[ip]
        for topic in client.topics:
            hub.subscribers[topic].discard(client)
        client.outbox.put_nowait(None)
        await writer
        if not ws.closed:
            await ws.close()
    return ws


async def _read_loop(app: web.Application, client: Client) -> None:
    config, m = app[CONFIG], app[METRICS]
    ws = client.ws
    deadline = time.monotonic() + config.handshake_timeout_s
    while not ws.closed:
        timeout = None if client.conn.version else max(0.0, deadline - time.monotonic())
        try:
            message = await ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            m.count("hearth_relay_rejections_total", reason="handshake_timeout")
            await ws.close(code=CLOSE_POLICY, message=b"handshake took too long")
            return
        if message.type == WSMsgType.ERROR:
            too_big = "size" in str(ws.exception()).lower() or "too big" in str(ws.exception())
            m.count(
                "hearth_relay_rejections_total", reason="frame_too_big" if too_big else "ws_error"
            )
            log.info("connection %s error: %s", client_tag(client.ip), ws.exception())
            return
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        if message.type != WSMsgType.BINARY:
            await _refuse(client, "text frames are not part of the protocol", m, "bad_frame")
            return
        try:
            frame = client.conn.receive(message.data)
        except ProtocolError as exc:
            await _refuse(client, str(exc), m, "bad_frame")
            return
        m.count("hearth_relay_bytes_in_total", amount=len(message.data))
        try:
            await _handle(app, client, frame)
        except ProtocolError as exc:
            await _refuse(client, str(exc), m, "bad_frame")
            return


async def _refuse(client: Client, reason: str, m: Metrics, label: str) -> None:
    m.count("hearth_relay_rejections_total", reason=label)
    log.info("closing %s: %s", client_tag(client.ip), reason)
    code = CLOSE_TOO_BIG if "limit" in reason and "frame" in reason else CLOSE_PROTOCOL
    await client.ws.close(code=code, message=reason.encode()[:120])


def _send(client: Client, frame: Frame) -> bytes:
    return client.conn.send(frame)


async def _handle(app: web.Application, client: Client, frame: Frame) -> None:
    config, store, hub, m = app[CONFIG], app[STORE], app[HUB], app[METRICS]
    if isinstance(frame, Hello):
        await client.ws.send_bytes(
            _send(client, Welcome(version=PROTOCOL_VERSION, limits=config.limits()))
        )
    elif isinstance(frame, Register):
        if not registration_valid(frame.topic, frame.relay_key, frame.proof):
            await _error(client, "bad-registration", "The registration proof does not verify.", m)
        elif not store.register(frame.topic, frame.relay_key):
            await _error(client, "topic-taken", "That topic is registered to another key.", m)
    elif isinstance(frame, Subscribe):
        if (
            frame.topic not in client.topics
            and len(client.topics) >= config.max_topics_per_connection
        ):
            await _error(
                client,
                "too-many-topics",
                f"At most {config.max_topics_per_connection} topics per connection.",
                m,
            )
            return
        client.topics[frame.topic] = frame.after
        hub.subscribers[frame.topic].add(client)
        client.outbox.put_nowait((b"subscribe", frame.topic, frame.after))
    elif isinstance(frame, Publish):
        await _publish(app, client, frame)
    elif isinstance(frame, Error):
        log.info("client %s reported: %s %s", client_tag(client.ip), frame.code, frame.message)


async def _error(
    client: Client, code: str, message: str, m: Metrics, bundle_id: bytes = b""
) -> None:
    m.count("hearth_relay_rejections_total", reason=code)
    await client.ws.send_bytes(_send(client, Error(code=code, message=message, id=bundle_id)))


def _take_token(client: Client, config: RelayConfig) -> bool:
    now = time.monotonic()
    client.tokens = min(
        float(config.publish_burst), client.tokens + (now - client.refilled) * config.publish_per_s
    )
    client.refilled = now
    if client.tokens < 1:
        return False
    client.tokens -= 1
    return True


async def _publish(app: web.Application, client: Client, frame: Publish) -> None:
    config, store, hub, m = app[CONFIG], app[STORE], app[HUB], app[METRICS]
    envelope = parse_envelope(frame.envelope)  # format errors close the connection
    bundle_id = envelope.id
    if not _take_token(client, config):
        m.count("hearth_relay_rate_limited_total")
        await _error(
            client, "rate-limited", "Publishing too fast; slow down and retry.", m, bundle_id
        )
        return
    blocked = hub.blocked_until.get(client.ip)
    if blocked and blocked[0] > time.monotonic():
        await _error(
            client, "blocked", "Too many bad signatures from this address; wait.", m, bundle_id
        )
        return
    relay_key = store.relay_key(envelope.topic)
    if relay_key is None:
        await _error(
            client, "unknown-topic", "Register the topic before publishing to it.", m, bundle_id
        )
        return
    if not envelope.relay_signature_valid(relay_key):
        _note_bad_signature(hub, client.ip, config)
        await _error(
            client, "bad-signature", "The bundle's admission signature is not valid.", m, bundle_id
        )
        return
    used_bytes, used_bundles = store.usage(envelope.topic)
    if (
        used_bytes + len(frame.envelope) > config.topic_quota_bytes
        or used_bundles + 1 > config.topic_quota_bundles
    ):
        await _error(
            client,
            "quota-exceeded",
            "This group's storage quota at this relay is "
            "full; ask the operator or use another relay.",
            m,
            bundle_id,
        )
        return
    usage = shutil.disk_usage(store.path.parent)
    if usage.used / usage.total > config.disk_high_water:
        await _error(
            client, "disk-full", "The relay's disk is nearly full; try another relay.", m, bundle_id
        )
        return
    started = time.perf_counter()
    try:
        stored = store.add(envelope.topic, bundle_id, frame.envelope)
    except StorageError as exc:
        log.warning("store failed: %s", exc)
        await _error(client, "store-failed", "The relay could not store the bundle.", m, bundle_id)
        return
    m.observe("hearth_relay_write_seconds", time.perf_counter() - started)
    m.count("hearth_relay_bundles_in_total")
    await client.ws.send_bytes(_send(client, Ack(id=bundle_id, cursor=stored.cursor)))
    if stored.new:
        for other in hub.subscribers.get(envelope.topic, ()):
            if other is not client:  # the publisher has it already
                _enqueue(app, other, envelope.topic, stored.cursor, frame.envelope)


def _note_bad_signature(hub: Hub, ip: str, config: RelayConfig) -> None:
    now = time.monotonic()
    recent = [t for t in hub.bad_signatures[ip] if now - t < 60] + [now]
    hub.bad_signatures[ip] = recent
    if len(recent) > config.bad_signatures_per_minute:
        previous = hub.blocked_until.get(ip, (0.0, 30.0))[1]
        hub.blocked_until[ip] = (now + previous, previous * 2)


def _enqueue(app: web.Application, client: Client, topic: bytes, cursor: int, data: bytes) -> None:
    config, m = app[CONFIG], app[METRICS]
    if client.queued_bytes + len(data) > config.outbound_buffer_bytes:
        m.count("hearth_relay_rejections_total", reason="slow_consumer")
        client.outbox.put_nowait(None)
        client.closing = asyncio.create_task(
            client.ws.close(code=CLOSE_POLICY, message=b"not reading")
        )
        return
    client.queued_bytes += len(data)
    client.outbox.put_nowait((topic, data, cursor))


async def _write_loop(app: web.Application, client: Client) -> None:
    """Sends catch-up pages and live bundles to one client, in order."""
    store, m = app[STORE], app[METRICS]
    try:
        while True:
            item = await client.outbox.get()
            if item is None or client.ws.closed:
                return
            first, second, cursor = item
            if first == b"subscribe":
                await _catch_up(client, store, m, second, cursor)
                continue
            topic, data = first, second
            client.queued_bytes -= len(data)
            if cursor <= client.topics.get(topic, 0):
                continue  # already sent during catch-up
            client.topics[topic] = cursor
            await client.ws.send_bytes(
                _send(client, Deliver(topic=topic, cursor=cursor, envelope=data))
            )
            m.count("hearth_relay_bundles_out_total")
    except (ConnectionResetError, HearthError) as exc:
        log.info("writer for %s stopped: %s", client_tag(client.ip), exc)


async def _catch_up(
    client: Client, store: RelayStore, m: Metrics, topic: bytes, after: int
) -> None:
    cursor = after
    while True:
        page = store.after(topic, cursor)
        for cursor, data in page:
            await client.ws.send_bytes(
                _send(client, Deliver(topic=topic, cursor=cursor, envelope=data))
            )
            m.count("hearth_relay_bundles_out_total")
        if len(page) < 200:
            break
    client.topics[topic] = max(cursor, client.topics.get(topic, 0))
    await client.ws.send_bytes(_send(client, CaughtUp(topic=topic, cursor=cursor)))
