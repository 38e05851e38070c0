"""A real relay process dialing peer relays that lie (``tests/hostile_peer.py``): they
claim another relay's id, send numbers no store holds, stop reading, replay their bundles
in a flood. Each lie gets that link refused or cut, said so in the log, and dialed again —
the dial loop never ends — and a cut link leaves no socket behind; replays are stored once.
All the while, the members of a group (real nodes, real sync client) write and sync through
the attacked relay, and their ledgers agree.

Most cases share one relay on each store (SQLite, PostgreSQL), which dials one hostile peer
of each kind from its start; cases that need other settings, or a real peer relay process
to freeze, start their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from hearth.crypto import SigningKey
from hearth.protocol.bundle import registration_proof
from hearth.protocol.connection import CLOSE_PROTOCOL
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    Deliver,
    Frame,
    Hello,
    Mirror,
    Register,
    Subscribe,
    encode_frame,
)
from relay.config import RelayConfig
from relay.server import make_app
from relay.sqlite_store import SqliteStore
from tests import postgres
from tests.hostile_peer import (
    HostileLink,
    HostilePeer,
    PeerLoop,
    Script,
    idle,
    link_as_peer,
    publish,
    run_against,
    stored,
)
from tests.peering_simulation import make_pool
from tests.syncing_group import SyncingGroup
from tests.test_relay_peering import bundle_ids, metric, relay_id
from tests.test_sync_processes import Relay, start_relay, wait_until

pytestmark = pytest.mark.process

[(KEYS, ENVELOPES)] = make_pool(groups=1, per_group=3)
# Bundles of 512 KiB: 24 of them fill the sockets' buffers of a link that is not read.
[(BIG_KEYS, BIG_ENVELOPES)] = make_pool(groups=1, per_group=24, extra_bytes=512 * 1024, seed=3)
[(EDGE_KEYS, EDGE_ENVELOPES)] = make_pool(groups=1, per_group=1, seed=7)
EDGE = 2**63 - 1  # the largest cursor on the wire (and in a store's signed 64-bit integer)
HELLO = Hello(versions=[PROTOCOL_VERSION], role="node", agent="test")
SETTINGS = """[relay]
send_stall_s = 1.0
publish_burst = 1000
publish_per_s = 1000.0
shutdown_grace_s = 1.0
"""


async def until(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
def dialing(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    """A relay that dials the hostile peer given (its address taken first)."""
    started: list[Relay] = []

    def start(peer: HostilePeer, settings: str = SETTINGS) -> Relay:
        config = tmp_path / "relay.toml"
        config.write_text(settings)
        relay = start_relay(tmp_path / "relay", config=config, extra=["--peer", peer.bind()])
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.kill(signal.SIGTERM)


def slow_consumers(relay: Relay) -> float:
    url = relay.url.replace("ws://", "http://") + "/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    found = re.findall(r'^hearth_relay_rejections_total{reason="slow_consumer"} (\S+)$', text, re.M)
    return float(found[0]) if found else 0.0


def log_of(relay: Relay) -> str:
    return (relay.data / "relay.log").read_text()


def descriptors(relay: Relay) -> int:
    return len(os.listdir(f"/proc/{relay.proc.pid}/fd"))


# --- one relay on each store, dialing every hostile peer at once, members syncing through it


@dataclass
class Attack:
    """A relay process that dials a hostile peer of each kind below (all at once, from its
    start), served by one loop in a thread of their own."""

    relay: Relay
    loop: PeerLoop
    peers: dict[str, HostilePeer]
    flood: threading.Event  # the replaying peer waits for it
    replays: int  # how many times it sends a bundle it sent before
    dialer: SigningKey  # a peer relay the relay accepts, which dials it
    racer: SigningKey  # another, which dials it twice at once

    def port(self, name: str) -> int:
        return int(self.peers[name].bind().split("#")[0].rsplit(":", 1)[1])

    def log_about(self, name: str) -> str:
        """The relay's log lines about one peer's links."""
        port = f":{self.port(name)}"
        return "\n".join(line for line in log_of(self.relay).splitlines() if port in line)


LIES: dict[str, tuple[list[Frame], str]] = {
    "a cursor no store holds": (
        [Deliver(topic=KEYS.topic, cursor=2**63, envelope=ENVELOPES[0])],
        "too large",
    ),
    "a second mirror": ([Mirror(after=0), Mirror(after=0)], "mirror is asked once per link"),
}


def _lies_once(frames: list[Frame]) -> Callable[[int], Script]:
    """On its first link, the peer sends ``frames`` (after reading the relay's mirror)."""

    async def lie(link: HostileLink) -> None:
        assert isinstance(await link.read_frame(), Mirror)
        for frame in frames:
            await link.send(frame)
        await link.read_until_closed()

    return lambda number: lie if number == 1 else idle


# Replays in the flood. Read all at once (before the reader took turns), 3,000 held a relay
# on SQLite for 0.8 s, and 1,000 one on PostgreSQL (round trips for each) for 2-5 s.
REPLAYS = {"sqlite": 3000, "postgresql": 1000}


def _replays_once(gate: threading.Event, replays: int) -> Callable[[int], Script]:
    """On its first link, once ``gate`` is set, the peer replays its three bundles again
    and again (cursors 1 to ``replays``)."""

    async def replay(link: HostileLink) -> None:
        assert isinstance(await link.read_frame(), Mirror)
        # The topic is known only once a member registered it (the test says when).
        await asyncio.to_thread(gate.wait, 60)
        for i in range(replays):
            await link.send(Deliver(topic=KEYS.topic, cursor=i + 1, envelope=ENVELOPES[i % 3]))
        await link.read_until_closed()

    return lambda number: replay if number == 1 else idle


def _at_the_edge(number: int) -> Script:
    """On its first link the peer delivers a bundle at cursor 2^63 - 1, then drops the link;
    on the next it waits to be asked from there."""

    async def deliver_at_the_edge(link: HostileLink) -> None:
        assert isinstance(await link.read_frame(), Mirror)
        registration = registration_proof(EDGE_KEYS)
        key = EDGE_KEYS.relay_key.public
        await link.send(Register(topic=EDGE_KEYS.topic, relay_key=key, proof=registration))
        await link.send(Deliver(topic=EDGE_KEYS.topic, cursor=EDGE, envelope=EDGE_ENVELOPES[0]))
        await asyncio.sleep(0.3)  # stored (a peer's bundles are not acknowledged)
        link.transport.abort()

    return deliver_at_the_edge if number == 1 else idle


async def _mirrors(link: HostileLink) -> None:
    """Asks for every bundle, and reads them (until the test stops it reading)."""
    await link.send(Mirror(after=0))
    await link.read_until_closed()


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncingGroup]:
    """Three members of a group (made through a relay of their own): they write and sync
    through each attacked relay while the attack goes on."""
    where = tmp_path_factory.mktemp("members")
    relay = start_relay(where / "relay")
    try:
        group = SyncingGroup.create(where, relay.url)
    finally:
        relay.kill(signal.SIGTERM)
    yield group
    group.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def attacked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Attack]:
    store: list[str] = []
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        store = ["--database", postgres.fresh_database(server)]
    flood = threading.Event()
    peers = {
        "liar": HostilePeer(claim=SigningKey.generate().public),  # signs with its own key
        **{lie: HostilePeer(script=_lies_once(frames)) for lie, (frames, _) in LIES.items()},
        "replays": HostilePeer(script=_replays_once(flood, REPLAYS[request.param])),
        "stops reading": HostilePeer(script=lambda _: _mirrors),
        "at the edge": HostilePeer(script=_at_the_edge),
    }
    dialer, racer = SigningKey.generate(), SigningKey.generate()
    loop = PeerLoop()
    where = tmp_path_factory.mktemp(f"attacked-{request.param}")
    config = where / "relay.toml"
    config.write_text(SETTINGS)
    addresses = [argument for peer in peers.values() for argument in ("--peer", peer.bind())]
    for peer in peers.values():
        loop.run(peer.start())
    accepted = ["--accept-peer", dialer.public.hex(), "--accept-peer", racer.public.hex()]
    relay = start_relay(where / "relay", config=config, extra=[*addresses, *accepted, *store])
    try:
        yield Attack(relay, loop, peers, flood, REPLAYS[request.param] - 3, dialer, racer)
    finally:
        relay.kill(signal.SIGTERM)
        for peer in peers.values():
            loop.run(peer.stop())
        loop.close()
    assert "Traceback" not in log_of(relay)


def test_a_relay_claiming_another_relays_id_is_refused_and_logged(
    attacked: Attack, members: SyncingGroup
) -> None:
    liar = attacked.peers["liar"]
    asyncio.run(members.write_and_sync(attacked.relay.url))
    assert wait_until(lambda: liar.dials >= 2), "the relay stopped dialing"
    assert liar.proven == 0, "the relay proved itself to (and mirrored with) a liar"
    assert liar.links[0].ws.close_code is not None
    said = attacked.log_about("liar")
    assert "peer relay refused" in said
    assert "proof that does not verify" in said  # the id was the one listed; the proof not


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_peer_that_sends_what_no_relay_would_is_closed_and_dialed_again(
    attacked: Attack, members: SyncingGroup, lie: str
) -> None:
    peer = attacked.peers[lie]
    asyncio.run(members.write_and_sync(attacked.relay.url))
    assert wait_until(lambda: peer.proven >= 2), "the relay never dialed again"
    assert peer.links[0].ws.close_code == CLOSE_PROTOCOL
    assert peer.links[-1].ws.close_code is None, "the link made again did not stay"
    assert LIES[lie][1] in log_of(attacked.relay)


_HEALTH_CHECKS = """
import select, sys, time, urllib.request
longest = 0.0
while not select.select([sys.stdin], [], [], 0.005)[0]:  # until the test closes stdin
    asked = time.monotonic()
    with urllib.request.urlopen(sys.argv[1], timeout=30) as response:
        assert response.status == 200
    longest = max(longest, time.monotonic() - asked)
print(longest)
"""


@contextlib.contextmanager
def health_checked(relay: Relay) -> Iterator[list[float]]:
    """Ask the relay's health check every few milliseconds meanwhile, from a process of its
    own (the test's own work would add to what it measures): the longest an answer took,
    in seconds, as the list's one item once done."""
    health = relay.url.replace("ws://", "http://") + "/healthz"
    checker = subprocess.Popen(
        [sys.executable, "-c", _HEALTH_CHECKS, health],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    longest = [0.0]
    try:
        yield longest
    finally:
        out, _ = checker.communicate(timeout=30)  # closes its stdin: it stops
        longest[0] = float(out)


def test_a_peer_replaying_its_bundles_in_a_flood_has_each_stored_once(
    attacked: Attack, members: SyncingGroup
) -> None:
    """Thousands of deliveries of the same three bundles: stored once each, the rest counted as
    duplicates; the relay answers others all the while (a member publishing, the group's
    members syncing, a health check every few milliseconds)."""
    relay = attacked.relay
    assert wait_until(lambda: attacked.peers["replays"].proven >= 1), "the relay never dialed"

    def duplicates() -> float:
        return metric(relay, "hearth_relay_peer_duplicates_total")

    async def test() -> None:
        assert await publish(relay.url, KEYS, ENVELOPES[:1]) == 1
        attacked.flood.set()
        await members.write_and_sync(relay.url)  # while the flood comes in
        assert await until(lambda: duplicates() >= attacked.replays, seconds=60), duplicates()
        assert await publish(relay.url, KEYS, ENVELOPES[1:2]) == 1  # still answered
        assert sorted(await stored(relay.url, KEYS.topic)) == sorted(ENVELOPES)

    with health_checked(relay) as longest:
        asyncio.run(test())
    print(f"the longest a health check waited during the flood: {longest[0]:.3f} s")
    assert longest[0] < 1.0, f"the relay answered nobody else for {longest[0]:.1f} s"


def test_a_peer_that_stops_reading_is_cut_off_whole_and_dialed_again(
    attacked: Attack, members: SyncingGroup
) -> None:
    """The peer asked for every bundle, then stops reading: its link is cut off on the
    outbound limit or the send deadline, its socket dropped, and it is dialed again."""
    relay, peer = attacked.relay, attacked.peers["stops reading"]
    port = attacked.port("stops reading")
    assert wait_until(lambda: peer.proven >= 1)
    before = slow_consumers(relay)
    attacked.loop.call(peer.links[0].stop_reading)

    async def test() -> None:
        published = publish(relay.url, BIG_KEYS, BIG_ENVELOPES)
        synced = members.write_and_sync(relay.url)
        assert (await asyncio.gather(published, synced))[0] == len(BIG_ENVELOPES)

    asyncio.run(test())
    assert wait_until(lambda: peer.proven >= 2), "the relay never dialed again"
    # Torn down whole: one socket to the peer (the new link's), holding nothing unread.
    assert wait_until(lambda: sockets_to(relay, port) == [0], 10), sockets_to(relay, port)
    assert slow_consumers(relay) > before
    assert "slow_consumer" in log_of(relay)
    # The link made again is read, and brings the peer what it asks for.
    assert wait_until(lambda: len(peer.links[-1].read) > len(BIG_ENVELOPES))


def test_a_cursor_at_the_edge_of_what_a_store_holds_is_kept_and_asked_from(
    attacked: Attack, members: SyncingGroup
) -> None:
    """A peer delivers a bundle at cursor 2^63 - 1: the store keeps it, and the relay asks
    from there when it links again (the peer only holds back its own bundles by it)."""
    peer = attacked.peers["at the edge"]
    asyncio.run(members.write_and_sync(attacked.relay.url))
    assert wait_until(lambda: peer.proven >= 2), "the relay never dialed again"
    assert wait_until(lambda: Mirror(after=EDGE) in peer.links[1].read, 5), peer.links[1].read
    assert asyncio.run(stored(attacked.relay.url, EDGE_KEYS.topic)) == EDGE_ENVELOPES


def test_two_links_racing_with_one_id_make_one_link(attacked: Attack) -> None:
    """A peer dials twice at once with one id, twice over: each time one link is made,
    the other refused; once the first is gone, the id links again."""

    async def race() -> list[bool]:
        async with aiohttp.ClientSession() as http:
            made = []
            for _ in range(2):
                links = await asyncio.gather(
                    *(link_as_peer(http, attacked.relay.url, attacked.racer) for _ in range(2))
                )
                made.append(sorted(linked for _, linked in links) == [False, True])
                for ws, _ in links:
                    await ws.close()
                await asyncio.sleep(0.2)  # the relay forgets the closed link
            return made

    assert asyncio.run(race()) == [True, True]


def test_connections_dropped_during_their_upgrade_cost_no_log_lines(attacked: Attack) -> None:
    """A client (or peer) that sends its WebSocket upgrade and resets the connection at
    once: each was an ERROR line with aiohttp's traceback (1.5 kB), however many."""
    relay = attacked.relay
    port = int(relay.url.rsplit(":", 1)[1])
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    before = log_of(relay).count('"level": "error"')
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(request)  # and a reset on closing, before any answer is read
    assert wait_until(lambda: rejections(relay, "gone_early") >= 1, 5)
    time.sleep(0.3)
    assert log_of(relay).count('"level": "error"') == before


def rejections(relay: Relay, reason: str) -> float:
    url = relay.url.replace("ws://", "http://") + "/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    found = re.findall(rf'^hearth_relay_rejections_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found[0]) if found else 0.0


def cpu_seconds(relay: Relay) -> float:
    fields = Path(f"/proc/{relay.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_peer_linking_again_in_a_tight_loop_is_refused_for_a_while(
    attacked: Attack, members: SyncingGroup
) -> None:
    """An accepted peer drops its link as soon as it asked for everything, and makes it
    again, thirty times: a few links are made, the rest refused, and the members syncing
    meanwhile are answered."""
    relay = attacked.relay
    cpu = cpu_seconds(relay)
    tried = linked = 0

    async def relink() -> None:
        nonlocal tried, linked
        async with aiohttp.ClientSession() as http:
            while tried < 30:
                ws, made = await link_as_peer(http, relay.url, attacked.dialer)
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(encode_frame(Mirror(after=0)))
                await ws.close()
                tried += 1
                linked += made

    async def test() -> None:
        await asyncio.gather(relink(), members.write_and_sync(relay.url))

    started = time.monotonic()
    asyncio.run(test())
    took = time.monotonic() - started
    spent = cpu_seconds(relay) - cpu
    print(f"{tried} links tried in {took:.1f} s, {linked} made, {spent:.2f} s of relay CPU")
    assert 1 <= linked <= 5 + took / 5 + 1  # five at once, then one every 5 s


# --- relays of their own, for what a shared one would not show


def _stops_reading(number: int) -> Script:
    async def freeze(link: HostileLink) -> None:
        await link.send(Mirror(after=0))  # send me everything...
        link.stop_reading()  # ...which it never reads
        await asyncio.sleep(30)

    return freeze if number == 1 else idle


def test_a_peer_that_stops_reading_is_found_out_by_its_heartbeat(
    dialing: Callable[..., Relay], members: SyncingGroup
) -> None:
    """With a big outbound buffer and no send deadline to speak of, the heartbeat that goes
    unanswered finds the peer out: the link is dropped whole and dialed again."""
    settings = (
        "[relay]\nheartbeat_s = 1.0\nsend_stall_s = 600.0\noutbound_buffer_bytes = 67108864\n"
        "publish_burst = 1000\npublish_per_s = 1000.0\nshutdown_grace_s = 1.0\n"
    )
    peer = HostilePeer(script=_stops_reading)
    relay = dialing(peer, settings)
    seen: dict[str, int] = {}

    async def test() -> None:
        assert await until(lambda: peer.proven >= 1)
        await asyncio.sleep(0.3)
        seen["linked"] = descriptors(relay)
        published = publish(relay.url, BIG_KEYS, BIG_ENVELOPES)
        synced = members.write_and_sync(relay.url)
        assert (await asyncio.gather(published, synced))[0] == len(BIG_ENVELOPES)
        assert await until(lambda: peer.proven >= 2), "the relay never dialed again"
        await asyncio.sleep(0.3)
        seen["again"] = descriptors(relay)
        assert metric(relay, "hearth_relay_peer_links") == 1

    run_against(peer, test)
    assert seen["again"] == seen["linked"], "the cut link's socket was left open"
    assert "link with peer relay" in log_of(relay)
    assert "slow_consumer" not in log_of(relay)


def rss_mib(relay: Relay) -> float:
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def sockets_to(relay: Relay, port: int) -> list[int]:
    """The relay's sockets to ``port``: for each, the bytes it holds that the other side
    has not read."""
    fd_dir = Path(f"/proc/{relay.proc.pid}/fd")
    inodes = set()
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    held = []
    for line in Path(f"/proc/{relay.proc.pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes and int(fields[2].split(":")[1], 16) == port:
            held.append(int(fields[4].split(":")[0], 16))
    return held


def test_a_frozen_peer_relay_is_cut_off_and_linked_again_once_it_runs(
    tmp_path: Path, members: SyncingGroup
) -> None:
    """SIGSTOP a real peer relay while bundles flow to it, then SIGCONT it; the group's
    members sync through the dialing relay meanwhile, and their bundles reach the peer."""
    config = tmp_path / "relay.toml"
    config.write_text(SETTINGS + "heartbeat_s = 1.0\nhandshake_timeout_s = 2.0\n")
    b = start_relay(
        tmp_path / "b", config=config, extra=["--accept-peer", relay_id(tmp_path / "a")]
    )
    a = start_relay(tmp_path / "a", config=config, extra=["--peer", f"{b.url}#{relay_id(b.data)}"])
    try:
        assert wait_until(lambda: metric(a, "hearth_relay_peer_links") == 1)
        asyncio.run(publish(a.url, KEYS, ENVELOPES))
        assert wait_until(lambda: len(bundle_ids(b)) == len(ENVELOPES))
        time.sleep(0.5)  # the watchdog gives memory back after a client leaves
        linked = {"descriptors": descriptors(a), "rss": rss_mib(a)}

        b.proc.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        asyncio.run(publish(a.url, BIG_KEYS, BIG_ENVELOPES))
        asyncio.run(members.write_and_sync(a.url))
        assert wait_until(lambda: metric(a, "hearth_relay_peer_links") == 0), "never cut off"
        cut_after = time.monotonic() - frozen
        port = int(b.url.rsplit(":", 1)[1])
        # Torn down whole while the peer is still frozen: no socket holds unsent bytes.
        assert wait_until(lambda: sum(sockets_to(a, port)) == 0, 5), "the cut link's socket stayed"
        b.proc.send_signal(signal.SIGCONT)

        assert wait_until(lambda: metric(a, "hearth_relay_peer_links") == 1), "never linked again"
        assert wait_until(lambda: bundle_ids(a) == bundle_ids(b)), "the backlog did not arrive"
        asyncio.run(publish(a.url, KEYS, ENVELOPES))  # a client leaves: memory is given back
        time.sleep(0.5)
        after = {"descriptors": descriptors(a), "rss": rss_mib(a)}
        print(f"cut off {cut_after:.1f} s after the freeze; {linked} -> {after}")
        assert after["descriptors"] == linked["descriptors"]
        # Not frozen, the same 12 MiB of bundles leave it ~9.5 MiB bigger (SQLite's page
        # cache, the newest deliveries kept encoded); frozen and linked again, 13-19 MiB
        # (the allocator keeps some of what the cut link held). A link's buffers kept for
        # good would add the bundles over again.
        assert after["rss"] < linked["rss"] + 24
    finally:
        b.proc.send_signal(signal.SIGCONT)
        for relay in (a, b):
            relay.kill(signal.SIGTERM)


def test_catch_ups_asked_faster_than_read_count_against_the_outbound_buffer(
    tmp_path: Path, members: SyncingGroup
) -> None:
    """A client asks for the same topic's catch-up thousands of times and reads nothing:
    the waiting catch-ups count against its outbound buffer, which cuts it off long
    before it stalls for ``send_stall_s``; members sync through the relay meanwhile."""
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\nsend_stall_s = 60.0\n")
    relay = start_relay(tmp_path / "relay", config=config)

    async def ask_and_never_read() -> bool:
        assert await publish(relay.url, BIG_KEYS, BIG_ENVELOPES[:1]) == 1
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(relay.url)
            await ws.send_bytes(encode_frame(HELLO))
            await ws.receive(timeout=10)  # welcome; nothing is read after it
            subscribe = encode_frame(Subscribe(topic=BIG_KEYS.topic, after=0))
            for _ in range(5000):
                await ws.send_bytes(subscribe)
            await members.write_and_sync(relay.url)
            return await until(lambda: slow_consumers(relay) >= 1, seconds=5)

    try:
        assert asyncio.run(ask_and_never_read()), "the catch-ups waited without a limit"
        assert "slow_consumer" in log_of(relay)
    finally:
        relay.kill(signal.SIGTERM)


class _FailsOnce(SqliteStore):
    """A store with a bug that shows once: the first read of a peer's cursor raises."""

    failed = False

    def peer_cursor(self, peer: bytes) -> int:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in reading a peer's cursor")
        return super().peer_cursor(peer)


async def test_the_dial_loop_outlives_a_link_that_fails_unexpectedly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In this process (a store with a bug), so no members sync through it here: they would
    share its event loop."""
    peer = HostilePeer()
    config = RelayConfig(data=str(tmp_path), peers=(peer.bind(),))
    runner = web.AppRunner(make_app(config, _FailsOnce(tmp_path / "relay.db")))
    await peer.start()
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        assert await until(lambda: peer.proven >= 1), "the relay never dialed again"
        assert peer.dials >= 2  # the first link failed before the relay proved itself
    finally:
        await runner.cleanup()
        await peer.stop()
    assert "the link with peer relay ws://127.0.0.1" in caplog.text
    assert "dialing again" in caplog.text
    caplog.clear()  # logged at ERROR with its traceback, as a bug must be


async def test_a_peer_address_that_never_answers_is_dialed_again(
    dialing: Callable[..., Relay], members: SyncingGroup
) -> None:
    """A network black hole, or a frozen relay: the connection is taken and no WebSocket
    upgrade ever comes back. Each dial gives up after the handshake timeout."""
    connections: list[asyncio.StreamWriter] = []

    async def say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    peer = HostilePeer()
    address = peer.bind()
    assert peer._socket is not None
    server = await asyncio.start_server(say_nothing, sock=peer._socket)
    relay = await asyncio.to_thread(dialing, peer, SETTINGS + "handshake_timeout_s = 1.0\n")
    try:
        await members.write_and_sync(relay.url)
        assert await until(lambda: len(connections) >= 2, seconds=10), "dialed once, for ever"
    finally:
        server.close()
        for writer in connections:
            writer.close()
    port = address.split("#")[0].rsplit(":", 1)[1]
    assert f"unreachable: ws://[address]:{port} (TimeoutError)" in log_of(relay)
