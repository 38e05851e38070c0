"""Moving frames between WebSockets and :class:`~relay.core.RelayCore`.

Every connection — a client that connected to us, or a peer relay, whichever side dialed —
is a :class:`Link` with a reader (messages into the core, the core's answers carried out)
and a writer (frames out in order, catch-ups included, where they fall in the queue). What
a link holds is bounded: a catch-up is read a page of bytes at a time, and its page counts
with the queued frames (and a fixed amount for each catch-up still waiting) against the
outbound buffer; a link that would pass that limit, or whose writer has waited
``send_stall_s`` for the other side to read, is cut off (:func:`cut`: once, and its socket
dropped). However a link ends, it is torn down whole: socket dropped, writer stopped. The
aiohttp handler in ``relay/server.py`` and the dialer in ``relay/peering.py`` both run a
link this way.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from aiohttp import WSMsgType, web

from hearth.errors import HearthError
from hearth.protocol.connection import CLOSE_POLICY, CLOSE_PROTOCOL
from hearth.protocol.frames import Ack, Deliver, Frame
from relay.config import RelayConfig
from relay.core import ALL_TOPICS, CatchUp, CloseClient, MirrorCatchUp, Output, Pause, RelayCore
from relay.door import Door
from relay.logs import shown

__all__ = [
    "CATCH_UP_COST",
    "CLOSE_GRACE_S",
    "CONFIG",
    "CORE",
    "DOOR",
    "FLUSH",
    "LINKS",
    "Flusher",
    "Link",
    "carry_out",
    "cut",
    "put_out",
    "run_link",
    "stalled",
]

log = logging.getLogger(__name__)

_Item = Union[Frame, CatchUp, MirrorCatchUp, None]  # noqa: UP007 - None stops the writer
if TYPE_CHECKING:  # aiohttp's client WebSocket is generic for the type checker only
    from aiohttp import ClientWebSocketResponse

    _WebSocket = Union[web.WebSocketResponse, ClientWebSocketResponse[bool]]  # noqa: UP007


@dataclass(eq=False)
class Link:
    """One WebSocket and the frames waiting to go out on it."""

    ws: _WebSocket
    ip: str
    outbox: deque[_Item] = field(default_factory=deque)
    queued_bytes: int = 0
    # topic -> cursor sent through (a peer relay's link counts every topic under ALL_TOPICS)
    sent_through: dict[bytes, int] = field(default_factory=dict)
    closing: asyncio.Task[None] | None = None  # once the link is being cut: only once
    # When the writer began a send it still waits on (None: it waits on nothing): a send
    # that does not move for ``send_stall_s`` means the other side stopped reading.
    busy_since: float | None = None
    # The connection's socket, where known (links clients dialed): lets a delivery skip the
    # queue while the writer is idle and the socket's buffer has room.
    transport: asyncio.BaseTransport | None = None
    # What the writer awaits when the outbox is empty. A plain future rather than an
    # asyncio.Queue: one bundle fanned out to every subscriber wakes every writer, and the
    # queue's bookkeeping was a good part of the relay's cost per delivery.
    _more: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        # Frames may be written straight to the socket only on a server's WebSocket (a
        # client's frames are masked) whose socket is known; and its buffer's limits, set
        # when it was made (neither aiohttp nor the relay changes them), are read once.
        self._direct = isinstance(self.ws, web.WebSocketResponse) and isinstance(
            self.transport, asyncio.WriteTransport
        )
        self._low = self._high = 0
        if self._direct:
            assert isinstance(self.transport, asyncio.WriteTransport)
            self._low, self._high = self.transport.get_write_buffer_limits()

    def socket_free(self, size: int) -> asyncio.WriteTransport | None:
        """The socket, if a frame of ``size`` bytes written to it now goes out in order and
        without waiting: the writer is idle with nothing queued, the WebSocket is open, and
        the socket's buffer has room (aiohttp waits only while it is above its high-water
        mark); otherwise ``None``."""
        more = self._more
        if self.outbox or not self._direct or more is None or more.done() or self.ws.closed:
            return None
        transport = self.transport
        assert isinstance(transport, asyncio.WriteTransport)
        if transport.is_closing():
            return None
        buffered = transport.get_write_buffer_size()
        return transport if buffered <= self._low and buffered + size <= self._high else None

    def not_sent_yet(self, key: bytes, cursor: int) -> bool:
        """Whether a live delivery at ``cursor`` is new on this link (a catch-up may have
        sent it already); if so, it counts as sent from now on."""
        if cursor <= self.sent_through.get(key, 0):
            return False
        self.sent_through[key] = cursor
        return True

    def put(self, item: _Item) -> None:
        """Queue an item for the writer (None stops it)."""
        self.outbox.append(item)
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    async def next_items(self) -> deque[_Item]:
        """Wait until something is queued; then take everything queued."""
        while not self.outbox:
            self._more = asyncio.get_running_loop().create_future()
            await self._more
        items, self.outbox = self.outbox, deque()
        return items


_DELIVER_OVERHEAD = 128  # a deliver frame's bytes beyond its envelope, at most (and framing)
_ACK_SIZE = 128  # an ack frame's bytes, at most (and framing)
CATCH_UP_COST = 4096
"""What a catch-up waiting in a link's queue counts against its outbound buffer."""

_BATCH_WINDOW_S = 0.002  # how long a busy batch of publishes gathers before one commit


class Flusher:
    """Commits what the readers staged in batches, one fsync for all that arrived
    together, and carries out the batch's acknowledgements and deliveries.

    A callback on the event loop, not a task waiting on an event: in a quiet spell it runs
    once for every bundle taken in, and waking a task cost a good part of what taking a
    bundle in does.
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.busy = False  # the last batch had company: more are likely on their way
        self.stopped = False
        self._handle: asyncio.Handle | None = None

    def wanted(self) -> None:
        """Something is staged: commit after every reader the same network events woke,
        so that what they read joins this batch."""
        if self._handle is None and not self.stopped:
            self._handle = asyncio.get_running_loop().call_soon(self._soon)

    def _soon(self) -> None:
        if self.busy or self.app[CORE].staged() > 1:
            # Let what arrives in a moment join too, for one fsync. A lone bundle in a
            # quiet spell (a member editing live) is committed at once: waiting would only
            # add latency, and the timer costs more CPU than the bundle itself.
            self._handle = asyncio.get_running_loop().call_later(_BATCH_WINDOW_S, self.now)
        else:
            self.now()

    def now(self) -> None:
        """Commit what is staged; send its acknowledgements and deliveries."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        core = self.app[CORE]
        self.busy = core.staged() > 1
        try:
            put_out(self.app, core.flush())  # a batch's outputs hold no pause
        except Exception:  # a bug here must not stop every later acknowledgement
            log.exception("flushing a batch failed")

    def stop(self) -> None:
        """Flush nothing more by itself (the relay is stopping)."""
        self.stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


CONFIG = web.AppKey("config", RelayConfig)
CORE = web.AppKey("core", RelayCore)
LINKS = web.AppKey("links", dict[int, Link])
FLUSH = web.AppKey("flush", Flusher)
DOOR = web.AppKey("door", Door)


CLOSE_GRACE_S = 2.0  # how long a cut link's close may take before its socket is dropped
# How long a peer relay's reader may go on taking frames already buffered before it lets
# every other connection have its turn (a buffered frame is read without waiting, so a
# flood would otherwise hold the relay for all of it: seconds on PostgreSQL).
_PEER_TURN_S = 0.005


async def run_link(app: web.Application, client: int, link: Link, opening: list[Output]) -> None:
    """Run a link until its WebSocket closes, starting with ``opening``; then forget it."""
    core = app[CORE]
    app[LINKS][client] = link
    writer = asyncio.create_task(_write_loop(app, client, link))
    try:
        await carry_out(app, opening)
        await _read_loop(app, client, link)
    finally:
        told = core.gone(client)
        app[LINKS].pop(client, None)
        await carry_out(app, told)
        # Torn down whole, however it ended (a failed heartbeat closes the WebSocket but not
        # always its socket): the socket dropped, and the writer, which may wait on a send
        # the other side never reads, given until the socket is gone.
        cut(link, 1000, "")
        assert link.closing is not None
        await link.closing
        try:
            await asyncio.wait_for(writer, CLOSE_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("a link's writer did not stop; it was cancelled")


def cut(link: Link, code: int, reason: str) -> None:
    """Close a link, once however often asked: a close frame if the other side takes it
    within a moment, and the socket dropped either way, so that a peer that reads nothing
    holds no descriptor and no buffered bytes here (a socket closed the polite way stays
    open until its unsent bytes are read, which for such a peer is never)."""
    if link.closing is None:
        link.put(None)
        link.closing = asyncio.create_task(_close(link, code, reason))


async def _close(link: Link, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(
            link.ws.close(code=code, message=reason.encode()[:120]), CLOSE_GRACE_S
        )
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        pass  # it did not take the close frame: dropped below all the same
    finally:
        transport = link.transport
        # Dropped unless it has closed by itself: closing with nothing left to send (the
        # other side read what was queued) it is gone already, and asyncio's abort of a
        # socket gone that way raises.
        if isinstance(transport, asyncio.WriteTransport) and not (
            transport.is_closing() and transport.get_write_buffer_size() == 0
        ):
            transport.abort()


def stalled(app: web.Application, now: float) -> None:
    """Cut off every link whose writer has waited longer than ``send_stall_s`` for the other
    side to read (called about once a second)."""
    config, core = app[CONFIG], app[CORE]
    for link in list(app[LINKS].values()):
        if (
            link.closing is None
            and link.busy_since is not None
            and now - link.busy_since > config.send_stall_s
        ):
            core.reject("slow_consumer", link.ip)
            cut(link, CLOSE_POLICY, "not reading fast enough")


async def _read_loop(app: web.Application, client: int, link: Link) -> None:
    config, core = app[CONFIG], app[CORE]
    ws = link.ws
    deadline = time.monotonic() + config.handshake_timeout_s
    through = False
    turn = time.monotonic()  # when this reader last let the others run (a peer relay's)
    while not ws.closed:
        timeout = None if core.handshaken(client) else max(0.0, deadline - time.monotonic())
        if timeout is None and not through and link.transport is not None and DOOR in app:
            app[DOOR].through(link.transport)  # past the door's deadline: handshake done
            through = True
        try:
            message = await ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            core.reject("handshake_timeout", link.ip)
            cut(link, CLOSE_POLICY, "handshake took too long")
            return
        if message.type == WSMsgType.ERROR:
            core.reject("frame_too_big" if ws.close_code == 1009 else "ws_error", link.ip)
            return
        if message.type != WSMsgType.BINARY:
            if message.type == WSMsgType.TEXT:
                core.reject("bad_frame", link.ip)
                cut(link, CLOSE_PROTOCOL, "text frames are not the protocol")
            return
        outputs = core.receive(client, message.data)
        if outputs:
            await carry_out(app, outputs)
        if core.pending():
            app[FLUSH].wanted()
        if link.closing is not None:
            return
        if core.peer_of(client) and time.monotonic() - turn > _PEER_TURN_S:
            await asyncio.sleep(0)  # the others' turn, the batch so far committed
            turn = time.monotonic()


async def carry_out(app: web.Application, outputs: list[Output]) -> None:
    """Do what the core decided: queue frames and catch-ups, close links, pause readers
    (a pause only ever comes from the reader's own link, and is taken after the rest)."""
    pause = put_out(app, outputs)
    if pause:
        await asyncio.sleep(pause)


def put_out(app: web.Application, outputs: list[Output]) -> float:
    """Queue frames and catch-ups and close links as the core decided, at once; the
    seconds of the pauses among ``outputs``, for the reader to take (:func:`carry_out`)."""
    config, core, links = app[CONFIG], app[CORE], app[LINKS]
    pause = 0.0
    framed_for: Deliver | None = None  # the bundle last framed for the socket, and its frame
    framed = b""
    framed_size = delivered = delivered_bytes = 0
    for output in outputs:
        link = links.get(output.client)
        if link is None:
            continue
        if link.closing is not None:
            continue  # being cut already: nothing more goes to it, and no more is said
        if isinstance(output, CloseClient):
            core.say("closing a connection", link.ip, shown(output.reason))
            cut(link, output.code, output.reason)
        elif isinstance(output, Pause):
            pause += output.seconds
        elif isinstance(output, (CatchUp, MirrorCatchUp)):
            # Each waiting catch-up counts against the outbound buffer too (and its pages
            # as they are read): a client that asks for catch-ups faster than it reads
            # them is cut off like one that does not read its deliveries.
            if link.queued_bytes + CATCH_UP_COST > config.outbound_buffer_bytes:
                core.reject("slow_consumer", link.ip)
                cut(link, CLOSE_POLICY, "not reading fast enough")
                continue
            link.queued_bytes += CATCH_UP_COST
            link.put(output)
        elif isinstance(output.frame, Deliver):
            frame = output.frame
            size = len(frame.envelope)
            socket = link.socket_free(size + _DELIVER_OVERHEAD)
            if socket is not None and core.plain_subscriber(output.client):
                # Most deliveries: written straight to the socket, encoded and framed once
                # for every subscriber, rather than through aiohttp's writer or by waking
                # the link's writer task — each was much of the relay's cost per delivery.
                if link.not_sent_yet(frame.topic, frame.cursor):
                    if frame is not framed_for:
                        payload = core.encoded(frame)
                        framed_for, framed, framed_size = (
                            frame,
                            websocket_frame(payload),
                            len(payload),
                        )
                    socket.write(framed)
                    delivered += 1
                    delivered_bytes += framed_size
                continue
            if link.queued_bytes + size > config.outbound_buffer_bytes:
                core.reject("slow_consumer", link.ip)
                cut(link, CLOSE_POLICY, "not reading fast enough")
                continue
            link.queued_bytes += size
            link.put(output.frame)
        elif (
            isinstance(output.frame, Ack)
            and (socket := link.socket_free(_ACK_SIZE)) is not None
            and core.plain_subscriber(output.client)
        ):
            # An acknowledgement, as small as frames come: straight to the socket too when
            # nothing is queued before it, without waking the link's writer.
            socket.write(websocket_frame(core.encode(output.client, output.frame)))
        else:
            link.put(output.frame)
    if delivered:
        core.delivered(delivered, delivered_bytes)
    return pause


def websocket_frame(payload: bytes) -> bytes:
    """A server's final, unmasked, uncompressed binary WebSocket frame (RFC 6455 §5.2)
    carrying ``payload``: what aiohttp would write for it on a connection without
    compression, which the relay's are."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x82, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x82, 126, size)
    else:
        header = struct.pack("!BBQ", 0x82, 127, size)
    return header + payload


async def _write_loop(app: web.Application, client: int, link: Link) -> None:
    """Sends one link's frames in order, doing catch-ups where they fall."""
    core = app[CORE]
    try:
        while True:
            for item in await link.next_items():
                if item is None or link.ws.closed or link.closing is not None:
                    return
                if isinstance(item, Deliver):
                    await _send_delivery(core, client, link, item)
                    link.queued_bytes -= len(item.envelope)
                elif isinstance(item, (CatchUp, MirrorCatchUp)):
                    try:
                        if isinstance(item, CatchUp):
                            await _catch_up(core, client, link, item)
                        else:
                            await _mirror_catch_up(core, client, link, item)
                    finally:
                        link.queued_bytes -= CATCH_UP_COST
                else:
                    await _send(link, core.encode(client, item))
    except (ConnectionError, HearthError) as exc:
        app[CORE].say("writer stopped", link.ip, shown(str(exc)))
        cut(link, CLOSE_POLICY, "the relay could not go on")
    except Exception:  # a bug here must end this link, not leave it open and mute
        log.exception("a link's writer failed")
        cut(link, CLOSE_POLICY, "the relay could not go on")


async def _send_delivery(core: RelayCore, client: int, link: Link, frame: Deliver) -> None:
    """Send a live delivery unless a catch-up sent it already."""
    key = ALL_TOPICS if core.peer_of(client) else frame.topic
    if link.not_sent_yet(key, frame.cursor):
        await _deliver(core, client, link, frame)


async def _send(link: Link, data: bytes) -> None:
    """Send bytes, noting how long the send waits for the other side to read."""
    link.busy_since = time.monotonic()
    try:
        await link.ws.send_bytes(data)
    finally:
        link.busy_since = None


async def _deliver(
    core: RelayCore, client: int, link: Link, frame: Deliver, *, fan_out: bool = True
) -> None:
    """Send one bundle; a peer relay first learns its topic's registration."""
    registration = core.announce(client, frame.topic)
    if registration is not None:
        await _send(link, core.encode(client, registration))
        if link.closing is not None:
            return  # the link ended while that was sent: the core has forgotten it
    await _send(link, core.encode(client, frame, fan_out=fan_out))
    core.metrics.count("hearth_relay_bundles_out_total")


async def _send_pages(
    core: RelayCore, client: int, link: Link, pages: Iterator[list[Deliver]], cursor: int
) -> int:
    """Send a catch-up's pages; each page counts against the outbound buffer until sent,
    so live deliveries that would pass it cut the link off. The newest cursor sent."""
    for page in pages:
        held = sum(len(frame.envelope) for frame in page)
        link.queued_bytes += held
        try:
            for frame in core.catch_up_frames(client, page):
                if link.closing is not None:
                    return cursor
                if isinstance(frame, Deliver):
                    await _deliver(core, client, link, frame, fan_out=False)
                    sent, newest = len(frame.envelope), frame.cursor
                else:  # many to a frame: only ever to a node (never a peer relay)
                    await _send(link, core.encode(client, frame))
                    core.metrics.count("hearth_relay_bundles_out_total", len(frame.envelopes))
                    sent, newest = sum(map(len, frame.envelopes)), max(frame.cursors)
                link.queued_bytes -= sent
                held -= sent
                cursor = max(cursor, newest)
        finally:
            link.queued_bytes -= held
    return cursor


async def _catch_up(core: RelayCore, client: int, link: Link, item: CatchUp) -> None:
    cursor = core.catch_up_start(item)
    cursor = await _send_pages(core, client, link, core.catch_up_pages(item), cursor)
    if link.closing is not None:
        return  # the link ended during the catch-up: the core has forgotten it
    link.sent_through[item.topic] = max(cursor, link.sent_through.get(item.topic, 0))
    await _send(link, core.encode(client, core.caught_up(item.topic, cursor)))


async def _mirror_catch_up(core: RelayCore, client: int, link: Link, item: MirrorCatchUp) -> None:
    cursor = core.mirror_catch_up_start(item)
    cursor = await _send_pages(core, client, link, core.mirror_catch_up_pages(item), cursor)
    if link.closing is not None:
        return  # the link ended during the catch-up: the core has forgotten it
    link.sent_through[ALL_TOPICS] = max(cursor, link.sent_through.get(ALL_TOPICS, 0))
    await _send(link, core.encode(client, core.caught_up(ALL_TOPICS, cursor)))
