"""Attacks on peer authentication and peer cursors by the operator of a peer relay who
knows the code (docs/security.md, "Peering"), one at a time against
:class:`~relay.core.RelayCore`: proofs replayed, relayed or cut from another context,
cursors at the edge of what a store holds, and a link made again to get its limits anew.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web

from hearth.protocol.bundle import EpochKeys, parse_envelope, registration_proof
from hearth.protocol.connection import CLOSE_PROTOCOL
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    CaughtUp,
    Hello,
    Mirror,
    Peer,
    Register,
    encode_frame,
)
from relay.config import RelayConfig
from relay.core import CatchUp, CloseClient, MirrorCatchUp, Pause, RelayCore, ToClient
from relay.identity import peer_proof
from relay.links import CONFIG, CORE, LINKS, Link, _write_loop, cut
from relay.sqlite_store import SqliteStore
from tests.peering_simulation import make_pool
from tests.test_relay_peer_links import (
    DIALER,
    ENVELOPES,
    KEYS,
    acceptor,
    delivered,
    handshake,
)

REGISTER = Register(
    topic=KEYS.topic, relay_key=KEYS.relay_key.public, proof=registration_proof(KEYS)
)


def welcome_of(core: RelayCore, client: int, nonce: bytes = b"") -> tuple[bytes, bytes]:
    """A relay dials ``core`` (hello with ``nonce``): the challenge and the proof it gets."""
    assert core.admit(client, "192.0.2.1")
    hello = Hello(versions=[PROTOCOL_VERSION], role="relay", agent="test", nonce=nonce)
    [welcome] = core.receive(client, encode_frame(hello))
    assert isinstance(welcome, ToClient)
    core.encode(client, welcome.frame)
    return welcome.frame.challenge, welcome.frame.proof  # type: ignore[union-attr]


def timed(now: list[float]) -> RelayCore:
    """A relay that accepts :data:`DIALER`, on a clock the test moves (``now[0]``)."""
    config = RelayConfig(accept_peers=(DIALER.public.hex(),))
    return RelayCore(config, SqliteStore(Path(":memory:")), clock=lambda: now[0])


def closed(outputs: list[object]) -> bool:
    return any(isinstance(o, CloseClient) for o in outputs)


def test_a_dialers_proof_seen_once_is_no_proof_on_another_link() -> None:
    """A proof copied from one link (by a peer that watched it, or from a log) is refused
    on the next: the challenge it signs is fresh on every link."""
    core = acceptor()
    challenge, _ = welcome_of(core, 1)
    seen = Peer(relay_id=DIALER.public, proof=peer_proof(DIALER, challenge, core.identity.public))
    assert not closed(core.receive(1, encode_frame(seen)))
    core.gone(1)
    welcome_of(core, 2)
    assert closed(core.receive(2, encode_frame(seen)))
    assert not core.peer_of(2)


def test_a_proof_made_for_one_relay_is_refused_by_another() -> None:
    """A hostile peer that the dialer proved itself to passes the proof on to a third
    relay, in the dialer's name, with that relay's challenge: the proof names the relay
    it was made for, and the third relay is not that one."""
    hostile, third = acceptor(), acceptor()
    challenge, _ = welcome_of(third, 1)
    # The dialer answers the challenge the hostile relay passed on, as made to it.
    relayed = peer_proof(DIALER, challenge, hostile.identity.public)
    assert closed(third.receive(1, encode_frame(Peer(relay_id=DIALER.public, proof=relayed))))
    assert not third.peer_of(1)


def test_a_relay_made_to_sign_a_nonce_has_given_no_proof_of_dialing() -> None:
    """Any client can make a relay sign a nonce of its choice (the acceptor's proof): that
    signature is under another context, and proves nothing as a dialer's proof, whatever
    the nonce."""
    victim = acceptor()
    third = acceptor(accept_peers=(victim.identity.public.hex(),))
    challenge, _ = welcome_of(third, 1)
    # What a dialer's proof signs (after its context): the challenge, then the acceptor.
    _, signed = welcome_of(victim, 1, nonce=challenge + third.identity.public)
    forged = Peer(relay_id=victim.identity.public, proof=signed)
    assert closed(third.receive(1, encode_frame(forged)))


def test_a_peer_linking_again_gets_no_new_burst() -> None:
    """A peer spends its burst of registrations (or bundles), drops the link and makes it
    again: the rate it is read at is its own, not the link's, so it is slowed as before."""
    core = acceptor(peer_publish_per_s=10.0, peer_publish_burst=2)
    keys = [k for k, _ in make_pool(groups=4, per_group=1, seed=5)]

    def register(client: int, k: EpochKeys) -> list[object]:
        frame = Register(topic=k.topic, relay_key=k.relay_key.public, proof=registration_proof(k))
        return list(core.receive(client, encode_frame(frame)))

    handshake(core, client=1)
    assert not any(isinstance(o, Pause) for k in keys[:2] for o in register(1, k))
    core.gone(1)
    handshake(core, client=2)  # at once (the clock has not moved): nothing refilled
    assert [o for k in keys[2:] for o in register(2, k) if isinstance(o, Pause)] == [
        Pause(2, 0.1),
        Pause(2, 0.1),
    ]


def test_a_cursor_at_the_edge_of_what_a_store_holds_is_kept_and_asked_from() -> None:
    """2^63 - 1, the largest cursor on the wire: stored, asked from on the next link,
    and the catch-up asked from there (or from 2^63 - 1 by the peer) is empty, not an
    overflow."""
    core = acceptor()
    handshake(core)
    assert core.receive(1, encode_frame(REGISTER)) == []
    assert not closed(delivered(core, 1, ENVELOPES[0], 2**63 - 1))
    assert core.store.peer_cursor(DIALER.public) == 2**63 - 1
    assert core.receive(1, encode_frame(Mirror(after=2**63 - 1)))
    core.gone(1)
    [ask] = handshake(core, client=2)
    assert isinstance(ask, ToClient)
    assert ask.frame == Mirror(after=2**63 - 1)
    [catch_up] = core.receive(2, encode_frame(Mirror(after=2**63 - 1)))
    assert list(core.mirror_catch_up(catch_up)) == []  # type: ignore[arg-type]
    [refused] = delivered(core, 2, ENVELOPES[1], 2**63)
    assert isinstance(refused, CloseClient)
    assert refused.code == CLOSE_PROTOCOL
    assert core.store.peer_cursor(DIALER.public) == 2**63 - 1


def test_a_peer_flooding_caught_up_frames_costs_a_few_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each ``caught_up`` a peer sends was a log line: 1,000 of them, a thousand lines."""
    core = acceptor()
    handshake(core)
    caplog.set_level(logging.INFO, logger="relay.core")
    for cursor in range(1000):
        core.receive(1, encode_frame(CaughtUp(topic=bytes(32), cursor=cursor)))
    lines = [r for r in caplog.records if "caught up" in r.getMessage()]
    assert 1 <= len(lines) <= 10, len(lines)


def test_a_peer_linking_again_and_again_is_refused_for_a_while() -> None:
    """A peer that drops its link and makes it again in a tight loop (each link a catch-up
    of the whole store begun, and log lines) is refused after a few quick links, and let
    in again once it waits; an honest dialer's backoff never comes near that."""
    now = [0.0]
    core = timed(now)
    refused = 0
    for client in range(1, 21):
        outputs = handshake(core, client=client)
        refused += closed(outputs)
        core.gone(client)
    assert 10 <= refused < 20
    assert core.metrics.value("hearth_relay_rejections_total", reason="peer_relinking") == refused
    now[0] += 30.0
    assert not closed(handshake(core, client=99))
    # An honest relay's dial loop: one second, then twice as long each time.
    core = timed(now)
    delay = 0.5  # the shortest its jitter gives
    for client in range(1, 12):
        assert not closed(handshake(core, client=client)), client
        core.gone(client)
        now[0] += delay
        delay *= 2


class _EndsWhileSending:
    """A link's WebSocket whose first send is still waiting when the link ends: the reader
    saw the peer go (the core forgets it) and cut the link. Stands in for the socket only."""

    def __init__(self, core: RelayCore, client: int) -> None:
        self.core, self.client, self.sent = core, client, 0
        self.link: Link | None = None

    async def send_bytes(self, data: bytes) -> None:
        if self.sent == 0 and self.link is not None:
            self.core.gone(self.client)
            cut(self.link, 1000, "")
        self.sent += 1

    async def close(self, code: int, message: bytes) -> None:
        pass

    closed = False


@pytest.mark.parametrize("what", ["mirror", "catch-up"])
async def test_a_link_that_ends_during_a_catch_up_stops_its_writer_quietly(what: str) -> None:
    """A peer that drops its link while the relay sends its catch-up (in a tight loop of
    links, some land there): the writer stops; it used to go on to say ``caught_up`` for
    a link the relay had forgotten (a KeyError, logged with its traceback, each time)."""
    core = acceptor()
    handshake(core)
    core.receive(1, encode_frame(REGISTER))
    for envelope in ENVELOPES[:3]:  # bundles from elsewhere (a peer gets none of its own)
        core.store.add(KEYS.topic, parse_envelope(envelope).id, envelope)
    core.store.commit()
    socket = _EndsWhileSending(core, 1)
    link = Link(ws=socket, ip="peer")  # type: ignore[arg-type]
    socket.link = link
    app = web.Application()
    app[CORE] = core
    app[CONFIG] = core.config
    app[LINKS] = {1: link}
    writer = asyncio.create_task(_write_loop(app, 1, link))
    link.put(MirrorCatchUp(1, 0) if what == "mirror" else CatchUp(1, KEYS.topic, 0))
    await asyncio.wait_for(writer, 5)
    assert socket.sent == 1
    assert link.closing is not None
    await link.closing


class _ClosedWebSocket:
    """A link's WebSocket already closed (stands in for the socket's WebSocket only)."""

    closed = True

    async def close(self, code: int, message: bytes) -> None:
        pass


async def test_dropping_a_socket_that_closed_by_itself_meanwhile_is_quiet() -> None:
    """A link closed politely with bytes still unsent, whose other side then read them
    all: the socket is gone by itself, and dropping it as a cut does must not fail (it
    raised from inside asyncio, logged with its traceback, after a link's last close)."""
    taken: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    server = await asyncio.start_server(
        lambda reader, writer: taken.append((reader, writer)), "127.0.0.1", 0, limit=1 << 26
    )
    port = server.sockets[0].getsockname()[1]
    transport, _ = await asyncio.get_running_loop().create_connection(
        asyncio.Protocol, "127.0.0.1", port
    )
    transport.write(b"x" * (32 << 20))  # more than the sockets hold: some stays queued here
    for _ in range(500):
        if taken:
            break
        await asyncio.sleep(0.01)
    transport.close()  # politely: once the rest is read
    assert transport.get_write_buffer_size() > 0
    reader, writer = taken[0]
    await reader.readexactly(32 << 20)
    for _ in range(500):  # the rest goes out, and the socket closes by itself
        if not transport.get_write_buffer_size():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    link = Link(ws=_ClosedWebSocket(), ip="peer", transport=transport)  # type: ignore[arg-type]
    cut(link, 1000, "")
    assert link.closing is not None
    await link.closing
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
