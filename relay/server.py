"""The relay's aiohttp application: WebSockets around :class:`~relay.core.RelayCore`, and
the operator endpoints.

Protocol summary (``docs/protocol.md``): the client says ``hello``, the relay answers
``welcome`` with its limits; then the client may ``register`` a topic with its relay key,
``subscribe`` after an arrival cursor (the relay sends every stored bundle after it, then
``caught_up``, then new ones live as ``deliver``), and ``publish`` bundles (checked for
size, relay signature, rate and quota, stored durably, answered with ``ack``, passed to
every other subscriber). Refusals are ``error`` frames; a malformed frame closes that
connection only. The relay never sees inside a bundle.

Each WebSocket runs as a :class:`~relay.links.Link` (``relay/links.py``); links to peer
relays this relay dials are kept up by ``relay/peering.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import shutil
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from aiohttp import WSCloseCode, web

from hearth import __version__
from hearth.crypto import SigningKey
from hearth.errors import StorageError
from hearth.protocol.frames import PROTOCOL_VERSION, VERSIONS
from relay.config import RelayConfig
from relay.core import ALL_TOPICS, RelayCore
from relay.door import Door
from relay.forwarded import Proxies, counted_as
from relay.links import (
    CLOSE_GRACE_S,
    CONFIG,
    CORE,
    DOOR,
    FLUSH,
    LINKS,
    Flusher,
    Link,
    carry_out,
    run_link,
    stalled,
)
from relay.metrics import CONTENT_TYPE, Metrics
from relay.peering import keep_peers_linked
from relay.storage import OperatorStore, PeeringStore, Store

__all__ = ["CONFIG", "CORE", "apply_settings", "make_app"]

log = logging.getLogger(__name__)

PROXIES = web.AppKey("proxies", Proxies)
STORE = web.AppKey("store", Store)
"""The store, for the status pages and the watch on other processes' commits (the core
keeps its own reference; nothing here reaches through the core for it)."""

_LOOK_EVERY_S = 1.0  # a shared store: how often to look for others' commits unprompted


def client_address(request: web.Request, proxies: Proxies) -> str:
    """The address limits count by: from a proxy of ours, the address it appended to
    ``X-Forwarded-For`` (relay/forwarded.py); otherwise the socket's own. A header sent
    on several lines is one list in their order (RFC 9110 §5.3): a proxy that adds a line
    of its own (HAProxy's ``option forwardfor``) leaves the line a client wrote first."""
    forwarded_for = ", ".join(request.headers.getall("X-Forwarded-For", ()))
    return proxies.client(request.remote or "?", forwarded_for)


def make_app(
    config: RelayConfig, store: Store, identity: SigningKey | None = None
) -> web.Application:
    """The relay as an aiohttp application (``identity``: what peer relays know it by)."""

    looked = [-1.0, 0.0]  # when, fraction: asked on every publish, looked up once a second

    def disk_fraction() -> float:
        now = time.monotonic()
        if now - looked[0] >= 1.0:
            usage = shutil.disk_usage(config.data)
            looked[:] = [now, usage.used / usage.total]
        return looked[1]

    app = web.Application()
    app[CONFIG] = config
    app[STORE] = store
    proxies = app[PROXIES] = Proxies.of(config.trusted_proxies)
    app[CORE] = RelayCore(
        config,
        store,
        clock=time.monotonic,
        wall_clock=time.time,
        disk_fraction=disk_fraction,
        metrics=Metrics(process=True),
        identity=identity,
    )
    app[LINKS] = {}
    # Sockets before their handshake (relay/door.py): a WebSocket that says no hello in
    # time is closed politely first (links.py); the door drops whatever is left after.
    app[DOOR] = Door(
        max_sockets=config.max_connections,
        per_address=config.max_connections_per_ip,
        from_proxy=proxies.__contains__,
        banned=lambda address: app[CORE].decisions.address_banned(address),
        counted_as=counted_as,
        timeout_s=config.handshake_timeout_s + CLOSE_GRACE_S,
        clock=time.monotonic,
    )
    app[FLUSH] = Flusher(app)
    app.cleanup_ctx.append(_flusher)
    app.cleanup_ctx.append(_pruner)
    app.cleanup_ctx.append(_watchdog)
    app.cleanup_ctx.append(_moderation)
    if store.shared:
        app.cleanup_ctx.append(_other_processes)
    app.router.add_get("/", websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/info", info)
    app.on_shutdown.append(_close_clients)
    keep_peers_linked(app)  # after: its on_shutdown goes first, so no link is redialed
    return app


_RESTART_ONLY = ("host", "port", "data", "database_url", "peers")
"""Settings a running relay cannot change: a reload keeps the old values and says so."""


async def apply_settings(app: web.Application, new: RelayConfig, refused: str = "") -> None:
    """Apply reloaded settings (SIGHUP) to a running relay: every limit, the trusted
    proxies, peers it accepts and the admission rules, from the next decision on; and read
    the moderation lists from the store again. ``refused``: why the file was not usable
    (``new`` is then the settings in effect, kept)."""
    old, core, door = app[CONFIG], app[CORE], app[DOOR]
    stuck = [name for name in _RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    new = replace(new, **{name: getattr(old, name) for name in stuck})
    proxies = Proxies.of(new.trusted_proxies)
    core.config = new
    core.mailboxes.limits = new.mailbox_limits()
    door.max_sockets = new.max_connections
    door.per_address = new.max_connections_per_ip
    door.timeout_s = new.handshake_timeout_s + CLOSE_GRACE_S
    door.from_proxy = proxies.__contains__
    with warnings.catch_warnings():
        # The settings are the one thing that changes in a running application.
        warnings.simplefilter("ignore", DeprecationWarning)
        app[CONFIG], app[PROXIES] = new, proxies
    await carry_out(app, core.reload_moderation())
    core.metrics.count("hearth_relay_reloads_total")
    if refused:
        log.warning(
            "SIGHUP: the settings were not reloaded, the old ones stay in effect: %s; "
            "the moderation lists were reloaded",
            refused,
        )
        return
    log.info("settings and moderation lists reloaded")
    if stuck:
        log.warning("%s changed: that takes a restart; kept as it was", ", ".join(stuck))


async def _flusher(app: web.Application) -> AsyncIterator[None]:
    """Commits published bundles in batches (relay/links.py, :class:`Flusher`) while the
    relay runs, and what is left at its end."""
    yield
    app[FLUSH].stop()
    await carry_out(app, app[CORE].flush())


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


_MODERATION_LOOK_S = 1.0  # how often to look whether `hearth-relay ban` and co. ran


async def _moderation(app: web.Application) -> AsyncIterator[None]:
    """Applies what the operator decided with ``hearth-relay`` (relay/moderation.py)
    while the relay runs: a look every couple of seconds whether an action was taken."""
    core = app[CORE]

    async def run() -> None:
        while True:
            await asyncio.sleep(_MODERATION_LOOK_S)
            try:
                await carry_out(app, core.reload_moderation(if_changed=True))
            except StorageError as exc:
                log.warning("%s", exc)

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _watchdog(app: web.Application) -> AsyncIterator[None]:
    """Once a second: cuts off links that stopped reading (relay/links.py,
    :func:`stalled`) and drops sockets that have not finished their handshake in time."""
    config, core, door = app[CONFIG], app[CORE], app[DOOR]
    every = min(1.0, config.send_stall_s / 4, config.handshake_timeout_s / 4)

    async def run() -> None:
        links = 0
        while True:
            await asyncio.sleep(every)
            stalled(app, time.monotonic())
            core.summarise()
            for transport, address in door.overdue():
                core.reject("handshake_timeout", address)
                door.left(transport)
                if isinstance(transport, asyncio.Transport):
                    transport.abort()
            if len(app[LINKS]) < links:
                give_back_memory()  # after clients left: what they used goes back too
            links = len(app[LINKS])

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, where the C library is glibc."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def give_back_memory() -> None:
    """Return freed memory to the system. Bundles are big objects: after many were read
    for clients that then left, the C allocator keeps the freed pages mapped unless
    asked, and the relay's RSS would stay near its peak."""
    if _TRIM is not None:
        _TRIM(0)


async def _other_processes(app: web.Application) -> AsyncIterator[None]:
    """Passes on what other relay processes sharing the store commit: woken by their
    notifications, and once a second in case one was missed."""
    core = app[CORE]
    woken = asyncio.Event()

    async def pass_on() -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken.wait(), _LOOK_EVERY_S)
            woken.clear()
            try:
                await carry_out(app, core.committed_elsewhere())
            except StorageError as exc:
                log.warning("%s", exc)

    tasks = [
        asyncio.create_task(app[STORE].watch_commits(woken.set)),
        asyncio.create_task(pass_on()),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close_clients(app: web.Application) -> None:
    await carry_out(app, app[CORE].flush())  # acknowledge what is already stored
    # All at once, and not waiting long for the answers: each close waits for the client
    # to close too, and one slow client must not hold up everyone's (or the exit).
    closing = [
        asyncio.ensure_future(
            link.ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay shutting down")
        )
        for link in list(app[LINKS].values())
    ]
    if closing:
        await asyncio.wait(closing, timeout=app[CONFIG].shutdown_grace_s / 4)


async def healthz(request: web.Request) -> web.Response:
    """Alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to take writes: the store is writable and the disk is not nearly full."""
    core = request.app[CORE]
    problems = []
    if not request.app[STORE].writable():
        problems.append("store not writable")
    if core.disk_fraction() > core.config.disk_high_water:
        problems.append("disk above high-water mark")
    return web.json_response(
        {"ready": not problems, "problems": problems}, status=503 if problems else 200
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    core = request.app[CORE]
    store = request.app[STORE]
    topics, envelopes = store.counts()
    core.metrics.gauge("hearth_relay_connections", len(core.clients))
    _storage_gauges(core, store)
    _peer_gauges(core, store, request.app[LINKS])
    core.metrics.gauge("hearth_relay_topics", topics)
    core.metrics.gauge("hearth_relay_bundles_stored", envelopes)
    return web.Response(body=core.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


_SIZE_BUCKETS = ((1 << 20, "under 1 MiB"), (16 << 20, "1-16 MiB"), (128 << 20, "16-128 MiB"))


def _storage_gauges(core: RelayCore, store: OperatorStore) -> None:
    """Storage per topic, without naming topics: how many topics hold how much, and how
    full the fullest is against its quota."""
    sizes = store.topic_sizes()
    counts = dict.fromkeys([label for _, label in _SIZE_BUCKETS] + ["128 MiB or more"], 0)
    for size, _ in sizes:
        label = next((label for limit, label in _SIZE_BUCKETS if size < limit), "128 MiB or more")
        counts[label] += 1
    for label, count in counts.items():
        core.metrics.gauge("hearth_relay_topics_by_size", count, size=label)
    config = core.config
    fullest = max(
        (max(b / config.topic_quota_bytes, n / config.topic_quota_bundles) for b, n in sizes),
        default=0.0,
    )
    core.metrics.gauge("hearth_relay_topic_quota_used_max", fullest)


def _peer_gauges(core: RelayCore, store: PeeringStore, links: dict[int, Link]) -> None:
    """Per linked peer relay (by the start of its id): how many stored bundles it has not
    been sent yet, and the bytes waiting to go to it."""
    core.metrics.clear("hearth_relay_peer_lag_bundles")
    core.metrics.clear("hearth_relay_peer_outbox_bytes")
    linked = 0
    for client, link in links.items():
        peer = core.peer_of(client)
        if not peer:
            continue
        linked += 1
        label = peer.hex()[:16]
        behind = store.count_after(link.sent_through.get(ALL_TOPICS, 0), not_from=peer)
        core.metrics.gauge("hearth_relay_peer_lag_bundles", behind, peer=label)
        core.metrics.gauge("hearth_relay_peer_outbox_bytes", link.queued_bytes, peer=label)
    core.metrics.gauge("hearth_relay_peer_links", linked)


async def info(request: web.Request) -> web.Response:
    """What this relay is and the limits it enforces."""
    return web.json_response(
        {
            "software": "hearth-relay",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "protocols": list(VERSIONS),
            "store": request.app[STORE].kind,
            "limits": request.app[CONFIG].limits(),
            "relay_id": request.app[CORE].identity.public.hex(),
        }
    )


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """One client's WebSocket, from handshake to close."""
    app = request.app
    config, core = app[CONFIG], app[CORE]
    ip = client_address(request, app[PROXIES])
    # No compression: bundles are ciphertext, deflating them only costs CPU.
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat_s, max_msg_size=config.max_frame_bytes, compress=False
    )
    client = id(ws)  # unique while the connection lives, which is as long as it is used
    # An operator's admission invite rides in the relay's address the group lists
    # (wss://relay.example.org/?admit=CODE): nodes need nothing new to present it.
    if not core.admit(client, ip, request.query.get("admit", "")):
        return web.Response(status=503, text="too many connections")
    prepared = False
    try:
        await ws.prepare(request)
        prepared = True
    except ConnectionResetError:
        # Gone before its upgrade was answered: counted, and not logged by aiohttp with
        # its traceback (a line of 1.5 kB for each connection anyone drops there).
        core.reject("gone_early", ip)
        return web.Response(status=400)  # to a closed socket: aiohttp drops it quietly
    finally:
        if not prepared:
            core.gone(client)
    await run_link(app, client, Link(ws=ws, ip=ip, transport=request.transport), [])
    return ws
