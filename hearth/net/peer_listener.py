"""``hearth serve --listen``: other nodes of this node's groups connect here directly.

The thin aiohttp adapter around :class:`~hearth.protocol.serving.ServingSession`: it
passes in a fresh random challenge per connection, delivers the bundles a peer lacks by
its version vector, runs what the peer publishes through the same intake as bundles from
a relay, and pushes bundles stored later (written here, by another ``hearth`` command on
this home, or received from a relay or another peer) to every peer following that topic.

Bounded as a relay is (SECURITY.md §7), since anyone on the network can reach it: every
accepted socket passes a :class:`~hearth.door.Door` before aiohttp reads a byte of it, so
at most :data:`MAX_PEERS` sockets are open, :data:`MAX_PER_ADDRESS` from one address (the
oldest still in its handshake makes room for a new one), and a socket that has neither
proven a device one of our groups has now (a removed member's new device key is no such
thing) nor joined an open invite mailbox within ``hello_timeout_s`` is closed —
politely once it is a WebSocket, dropped a moment later whatever it is (one that never
finished its HTTP request too); frames are at most ``MAX_FRAME``. Older epochs' topics
go only to devices the group lists now (:class:`~hearth.protocol.serving.ServingSession`).

It also holds invite mailboxes, as a relay does, for invites run over the local network
when the group has no relay: this node's own ``hearth invite`` opens one (only from this
machine), and the joiner, who found this listener by mDNS, joins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from hearth.door import Door, Doorway
from hearth.ledger import membership_rules
from hearth.node.node import Node
from hearth.protocol.frames import MAX_FRAME, Deliver, Error, Frame, Mailbox
from hearth.protocol.mailbox import Mailboxes, MailboxLimits
from hearth.protocol.serving import CatchUpPeer, Close, Send, ServingSession, TakeIn, ToMailboxes
from hearth.validity.intake import Verdict, take_in

__all__ = ["HELLO_TIMEOUT_S", "MAX_PEERS", "MAX_PER_ADDRESS", "open_invites", "start_listener"]

log = logging.getLogger(__name__)

MAX_PEERS = 32  # a group's members on one LAN, with room to spare
MAX_PER_ADDRESS = 4  # a member's node or two on one machine, and an invite
HELLO_TIMEOUT_S = 10.0  # to prove a device of one of our groups, or join an invite
CLOSE_POLICY = 1008
_GRACE_S = 1.0  # after the hello timeout, for a polite close before the socket is dropped
_BACKLOG = 64
_DOOR = web.AppKey("door", Door)
_SERVERS: web.AppKey[list[asyncio.Server]] = web.AppKey("servers")
_PER_ADDRESS: web.AppKey[dict[str, int]] = web.AppKey("per_address")
_HELLO_TIMEOUT_S = web.AppKey("hello_timeout_s", float)
_NODE = web.AppKey("node", Node)
_PEERS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("peers")
_POLL_S = web.AppKey("poll_s", float)
_MAILBOXES = web.AppKey("mailboxes", Mailboxes)
_SESSIONS: web.AppKey[dict[int, tuple[web.WebSocketResponse, ServingSession]]] = web.AppKey(
    "sessions"
)
# A handful of invites at a time is plenty for one node; each lives ten minutes at most.
_INVITE_LIMITS = MailboxLimits(max_mailboxes=8, per_creator=8, ttl_s=600.0)
_LOOPBACK = ("127.0.0.1", "::1")


async def start_listener(
    node: Node,
    host: str,
    port: int,
    *,
    poll_s: float = 0.5,
    hello_timeout_s: float = HELLO_TIMEOUT_S,
) -> tuple[web.AppRunner, str]:
    """Listen for peers on ``host:port`` (0: any free port); return the runner and the
    ``ws://`` address it listens on."""
    app = web.Application()
    app[_NODE] = node
    app[_PEERS] = set()
    app[_PER_ADDRESS] = {}
    app[_HELLO_TIMEOUT_S] = hello_timeout_s
    app[_POLL_S] = poll_s
    app[_MAILBOXES] = Mailboxes(_INVITE_LIMITS, time.monotonic)
    app[_SESSIONS] = {}
    door = app[_DOOR] = Door(
        max_sockets=MAX_PEERS,
        per_address=MAX_PER_ADDRESS,
        timeout_s=hello_timeout_s + _GRACE_S,
        clock=time.monotonic,
    )
    app[_SERVERS] = []
    app.router.add_get("/", _handle)
    app.on_shutdown.append(_close_peers)
    app.cleanup_ctx.append(_drop_overdue)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    handlers = runner.server
    assert handlers is not None
    # Listening ourselves rather than through a site: each accepted socket passes the door
    # before aiohttp reads a byte of it (a half-sent request counts, and times out).
    server = await asyncio.get_running_loop().create_server(
        lambda: Doorway(handlers(), door, _refused), host, port, backlog=_BACKLOG
    )
    app[_SERVERS].append(server)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    return runner, f"ws://{bound_host}:{bound_port}"


def _refused(reason: str, address: str) -> None:
    log.debug("refused a connection from %s: %s", address, reason)


async def _drop_overdue(app: web.Application) -> AsyncIterator[None]:
    """Drops, a few times a hello timeout, the sockets that have not proven a device (nor
    joined an invite) in time, whatever they are."""
    door = app[_DOOR]
    every = min(1.0, app[_HELLO_TIMEOUT_S] / 4)

    async def run() -> None:
        while True:
            await asyncio.sleep(every)
            for transport, address in door.overdue():
                log.info("dropping a connection from %s that said nothing in time", address)
                door.left(transport)
                if isinstance(transport, asyncio.Transport):
                    transport.abort()

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def open_invites(runner: web.AppRunner) -> list[int]:
    """The numbers of the invite mailboxes open at a listener (announced on the LAN)."""
    return sorted(runner.app[_MAILBOXES].open)


def _topics(node: Node) -> dict[bytes, bytes]:
    """Each served topic with its relay key's public half: every epoch of every group."""
    return {
        keys.topic: keys.relay_key.public
        for group in node.groups()
        for _, keys in node.feeds.epochs(group.id)
    }


def _listed(node: Node) -> dict[bytes, frozenset[bytes]]:
    """Each topic of an older epoch with the devices its group lists now: only they are
    delivered it (a new device, joining, is given the current epoch)."""
    listed: dict[bytes, frozenset[bytes]] = {}
    for group in node.groups():
        cards = membership_rules.cards(node.view(group.id).tables["members"])
        now = frozenset(c.key for c in cards if c.cutoff is None)
        current = node.feeds.current_keys(group.id).topic
        listed.update(
            (keys.topic, now) for _, keys in node.feeds.epochs(group.id) if keys.topic != current
        )
    return listed


def _departed(node: Node) -> dict[bytes, frozenset[bytes]]:
    """Each served topic with the devices its group removed (or that left)."""
    departed: dict[bytes, frozenset[bytes]] = {}
    for group in node.groups():
        gone = membership_rules.departed(node.view(group.id).tables["members"])
        departed.update((keys.topic, gone) for _, keys in node.feeds.epochs(group.id))
    return departed


async def _handle(request: web.Request) -> web.StreamResponse:
    """One peer's connection, from the handshake until either side closes it."""
    node, peers = request.app[_NODE], request.app[_PEERS]
    address, per_address = request.remote or "?", request.app[_PER_ADDRESS]
    if len(peers) >= MAX_PEERS or per_address.get(address, 0) >= MAX_PER_ADDRESS:
        raise web.HTTPServiceUnavailable(text="Too many peers connected; try again later.")
    per_address[address] = per_address.get(address, 0) + 1
    try:
        return await _serve(request, node, peers)
    finally:
        per_address[address] -= 1
        if not per_address[address]:
            del per_address[address]


async def _serve(
    request: web.Request, node: Node, peers: set[web.WebSocketResponse]
) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=30)
    await ws.prepare(request)
    peers.add(ws)
    source = f"peer {request.remote}"
    session = ServingSession(
        _topics(node),
        challenge=secrets.token_bytes(32),
        device_key=node.identity.device_key,
        departed=_departed(node),
        listed=_listed(node),
    )
    client, sessions = id(ws), request.app[_SESSIONS]
    sessions[client] = (ws, session)
    invited: set[int] = set()  # this connection, once it used an invite mailbox

    async def hello_or_close() -> None:
        await asyncio.sleep(request.app[_HELLO_TIMEOUT_S])
        if not session.in_a_group and client not in invited:
            log.info("closing a connection that said nothing in time")
            await ws.close(code=CLOSE_POLICY, message=b"too slow to prove a device")

    known: set[bytes] = set()  # bundle ids the peer has or was sent
    mark = node.feeds.newest_arrival()

    async def push_new() -> None:
        nonlocal mark
        while True:
            await asyncio.sleep(request.app[_POLL_S])
            arrived, mark = node.feeds.arrivals(mark)
            for bundle_id, topic, envelope in arrived:
                frame = session.deliver(topic, envelope)
                if frame is not None and bundle_id not in known:
                    known.add(bundle_id)
                    await ws.send_bytes(session.send(frame))

    pusher = asyncio.create_task(push_new())
    watchdog = asyncio.create_task(hello_or_close())
    try:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                await ws.close(code=1003, message=b"binary frames only")
                break
            for output in session.receive(message.data):
                if isinstance(output, ToMailboxes):
                    await _mailbox(request, client, output)
                    if _in_an_invite(request.app, client):
                        invited.add(client)
                elif not await _carry_out(node, ws, session, output, known, source):
                    break
            if session.in_a_group or client in invited:
                request.app[_DOOR].through(request.transport)  # no deadline any more
    finally:
        for task in (pusher, watchdog):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        peers.discard(ws)
        sessions.pop(client, None)
        await _pass_on(request.app, request.app[_MAILBOXES].gone(client))
    return ws


def _in_an_invite(app: web.Application, client: int) -> bool:
    """Whether a connection is a side of an open invite mailbox (a number asked for that is
    not open is no reason to stay past the hello timeout)."""
    return any(client in box.members for box in app[_MAILBOXES].open.values())


async def _mailbox(request: web.Request, client: int, output: ToMailboxes) -> None:
    """An invite mailbox frame; only this machine may open a mailbox here."""
    frame = output.frame
    if isinstance(frame, Mailbox) and frame.create and request.remote not in _LOOPBACK:
        answer = Error(code="no-such-mailbox", message="Invites are opened here only locally.")
        await _pass_on(request.app, [(client, answer)])
        return
    creator = request.remote or "?"
    await _pass_on(request.app, request.app[_MAILBOXES].handle(client, creator, frame))


async def _pass_on(app: web.Application, frames: list[tuple[int, Frame]]) -> None:
    sessions = app[_SESSIONS]
    for client, frame in frames:
        if client in sessions:
            ws, session = sessions[client]
            if not ws.closed:
                await ws.send_bytes(session.send(frame))


async def _carry_out(
    node: Node,
    ws: web.WebSocketResponse,
    session: ServingSession,
    output: object,
    known: set[bytes],
    source: str,
) -> bool:
    """Do what one output says; ``False`` once the connection is closed."""
    match output:
        case Send(frame):
            await ws.send_bytes(session.send(frame))
        case CatchUpPeer(topic, have):
            for bundle_id, envelope in node.feeds.lacking(topic, have):
                known.add(bundle_id)
                await ws.send_bytes(session.send(Deliver(topic=topic, cursor=0, envelope=envelope)))
            found = node.feeds.keys_for_topic(topic)
            heads = node.feeds.heads(found[0]) if found else []
            await ws.send_bytes(
                session.send(session.caught_up(topic, [(a, s) for a, s, _ in heads]))
            )
        case TakeIn(bundle_id, envelope):
            known.add(bundle_id)
            outcome = take_in(node, envelope, source=source)
            reason = outcome.reason if outcome.verdict is Verdict.REJECTED else ""
            await ws.send_bytes(session.send(session.taken(bundle_id, reason)))
        case Close(code, reason):
            log.info("closing %s: %s", ws, reason)
            await ws.close(code=code, message=reason.encode()[:120])
            return False
    return True


async def _close_peers(app: web.Application) -> None:
    for server in app[_SERVERS]:
        server.close()  # no new sockets
    peers = app[_PEERS]
    for ws in [*peers]:
        await ws.close(code=1001, message=b"node shutting down")
