"""A peer relay that lies, for tests: a small aiohttp server speaking the accepting side of
the peering exchange (docs/protocol.md, "Relay to relay") to a real relay that dials it.

It answers the dialing relay's ``hello`` as the test tells it to — with its own id and a
valid proof, with another relay's id, without a proof — and, once the dialer has proven
itself, runs the test's script for that link: frames a real relay would never send
(numbers too big for any store, a second ``mirror``), or nothing read at all. It notes
every link it was dialed on and every frame it read, so a test can tell whether the real
relay came back after a link was cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import WSMsgType, web

from hearth.crypto import SigningKey
from hearth.protocol.bundle import EpochKeys, registration_proof
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    CaughtUp,
    Deliver,
    Deliveries,
    Error,
    Frame,
    Hello,
    Mirror,
    Peer,
    Publish,
    Register,
    Subscribe,
    Welcome,
    decode_frame,
    encode_frame,
)
from relay.identity import acceptor_proof, peer_proof, peer_proof_valid

Script = Callable[["HostileLink"], Awaitable[None]]
T = TypeVar("T")


@dataclass
class HostileLink:
    """One link the real relay dialed: the WebSocket and what was read on it."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    read: list[Frame] = field(default_factory=list)

    def stop_reading(self) -> None:
        """Read nothing more from the socket: what the relay sends piles up in its buffers."""
        self.transport.pause_reading()

    async def send(self, frame: Frame) -> None:
        """Send a frame, checked by nothing (a forged one included)."""
        await self.ws.send_bytes(encode_frame(frame))

    async def read_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame the relay sends, or ``None`` once the link is closed."""
        message = await self.ws.receive(timeout=timeout)
        if message.type != WSMsgType.BINARY:
            return None
        frame = decode_frame(message.data)
        self.read.append(frame)
        return frame

    async def read_until_closed(self) -> None:
        """Read (and keep) everything until the relay closes the link."""
        while await self.read_frame(timeout=60.0) is not None:
            pass


async def idle(link: HostileLink) -> None:
    """An honest peer with nothing to send: read until the link ends."""
    await link.read_until_closed()


@dataclass
class HostilePeer:
    """The server, on 127.0.0.1. ``claim``: the relay id its welcome gives (its own by
    default); ``prove``: whether it signs the dialer's nonce; ``script``: what it does on
    each link once the dialer has proven itself (which one, by how many dials came
    before)."""

    key: SigningKey = field(default_factory=SigningKey.generate)
    claim: bytes = b""
    prove: bool = True
    script: Callable[[int], Script] = lambda _: idle
    dials: int = 0  # links the real relay opened
    proven: int = 0  # ... on which it proved who it is
    links: list[HostileLink] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _socket: socket.socket | None = None

    @property
    def relay_id(self) -> bytes:
        """The id it really holds the key of."""
        return self.key.public

    def bind(self) -> str:
        """Take a port (before the real relay starts, which must be told it): the address
        with the id it claims, as a ``--peer`` argument (the same port every time)."""
        if self._socket is None:
            self._socket = socket.socket()
            self._socket.bind(("127.0.0.1", 0))
            self._socket.listen(16)  # the relay may dial before start(): it waits there
        port = self._socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}#{(self.claim or self.relay_id).hex()}"

    async def start(self) -> None:
        """Serve on the port taken by :meth:`bind`."""
        assert self._socket is not None
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def stop(self) -> None:
        """Stop serving; every link still open is dropped."""
        for link in self.links:
            link.transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=8 * 1024 * 1024)
        await ws.prepare(request)
        self.dials += 1
        number = self.dials
        assert isinstance(request.transport, asyncio.Transport)
        link = HostileLink(ws, request.transport)
        self.links.append(link)
        # The relay may cut the link at any point: what a liar must expect.
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await self._exchange(link, number)
        return ws

    async def _exchange(self, link: HostileLink, number: int) -> None:
        hello = await link.read_frame()
        if not isinstance(hello, Hello) or hello.role != "relay":
            await link.ws.close()
            return
        challenge = secrets.token_bytes(32)
        proof = acceptor_proof(self.key, hello.nonce, challenge) if self.prove else b""
        await link.send(
            Welcome(
                version=PROTOCOL_VERSION,
                limits={},
                challenge=challenge,
                relay_id=self.claim or self.relay_id,
                proof=proof,
            )
        )
        peer = await link.read_frame()
        if isinstance(peer, Peer) and peer_proof_valid(
            peer.relay_id, challenge, self.claim or self.relay_id, peer.proof
        ):
            self.proven += 1
            await self.script(number)(link)
        else:
            await link.read_until_closed()


def run_against(peer: HostilePeer, test: Callable[[], Awaitable[None]]) -> None:
    """Serve ``peer`` while ``test`` runs (in this thread's new event loop)."""

    async def main() -> None:
        await peer.start()
        try:
            await test()
        finally:
            await peer.stop()

    asyncio.run(main())


async def publish(url: str, keys: EpochKeys, envelopes: list[bytes]) -> int:
    """A node registers ``keys``' topic at the relay at ``url`` and publishes ``envelopes``
    there; how many were acknowledged."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, max_msg_size=0)
        hello = Hello(versions=[PROTOCOL_VERSION], role="node", agent="test")
        await ws.send_bytes(encode_frame(hello))
        assert (await ws.receive(timeout=10)).type == WSMsgType.BINARY  # welcome
        proof = registration_proof(keys)
        frames: list[Frame] = [
            Register(topic=keys.topic, relay_key=keys.relay_key.public, proof=proof),
            *(Publish(envelope=envelope) for envelope in envelopes),
        ]
        for frame in frames:
            await ws.send_bytes(encode_frame(frame))
        acked = 0
        while acked < len(envelopes):
            message = await ws.receive(timeout=20)
            assert message.type == WSMsgType.BINARY, message
            answer = decode_frame(message.data)
            assert not isinstance(answer, Error), answer
            acked += isinstance(answer, Ack)
        await ws.close()
        return acked


class PeerLoop:
    """An event loop in a thread of its own, serving hostile peers for a whole module of
    tests (one relay dials them all), while each test runs in the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``work`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def call(self, function: Callable[[], object]) -> None:
        """Call ``function`` on the loop (the peers' state is the loop's own)."""
        self.loop.call_soon_threadsafe(function)

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


async def stored(url: str, topic: bytes) -> list[bytes]:
    """The envelopes the relay at ``url`` holds for ``topic``, as a subscriber reads them
    (whatever the relay's store)."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, max_msg_size=0)
        hello = Hello(versions=[PROTOCOL_VERSION], role="node", agent="test")
        await ws.send_bytes(encode_frame(hello))
        assert (await ws.receive(timeout=10)).type == WSMsgType.BINARY  # welcome
        await ws.send_bytes(encode_frame(Subscribe(topic=topic, after=0)))
        envelopes = []
        while True:
            message = await ws.receive(timeout=20)
            assert message.type == WSMsgType.BINARY, message
            frame = decode_frame(message.data)
            if isinstance(frame, CaughtUp):
                break
            if isinstance(frame, Deliveries):  # a catch-up to a node of version 3 on
                envelopes += frame.envelopes
                continue
            assert isinstance(frame, Deliver), frame
            envelopes.append(frame.envelope)
        await ws.close()
        return envelopes


async def link_as_peer(
    http: aiohttp.ClientSession, url: str, key: SigningKey
) -> tuple[aiohttp.ClientWebSocketResponse, bool]:
    """Dial the relay at ``url`` as the peer relay ``key`` (one it accepts) and prove it:
    the WebSocket, and whether the relay linked (it asked for a ``mirror``; it closes a
    link it refuses)."""
    ws = await http.ws_connect(url, max_msg_size=0)
    nonce = secrets.token_bytes(32)
    hello = Hello(versions=[PROTOCOL_VERSION], role="relay", agent="test", nonce=nonce)
    await ws.send_bytes(encode_frame(hello))
    welcome = decode_frame((await ws.receive(timeout=10)).data)
    assert isinstance(welcome, Welcome)
    proof = peer_proof(key, welcome.challenge, welcome.relay_id)
    await ws.send_bytes(encode_frame(Peer(relay_id=key.public, proof=proof)))
    answer = await ws.receive(timeout=10)
    linked = answer.type == WSMsgType.BINARY and isinstance(decode_frame(answer.data), Mirror)
    return ws, linked
