"""Every limit of SECURITY.md §7, under real load on loopback, against a real
``hearth-relay`` process on each store: abusers get their explicit error or are cut off,
and meanwhile an honest group's nodes keep syncing and a new client connects within 1 s.

Abusers come from addresses of their own (the relay trusts ``X-Forwarded-For`` here, as
behind a proxy), so the per-address limits they hit do not touch the honest nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from hearth.crypto import SigningKey
from hearth.protocol.bundle import EpochKeys, registration_proof
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    CaughtUp,
    Deliver,
    Error,
    Frame,
    Hello,
    Mailbox,
    Mirror,
    Peer,
    Publish,
    Register,
    Subscribe,
    Welcome,
    decode_frame,
    encode_frame,
)
from relay.identity import peer_proof
from tests.peering_simulation import forged, make_pool
from tests.test_sync_processes import Relay, group_of_three, start_relay, state

pytestmark = pytest.mark.process

# Small limits, so that each is reached quickly.
SETTINGS = """
[relay]
trusted_proxies = ["127.0.0.1"]
handshake_timeout_s = 1.5
max_connections = 200
max_connections_per_ip = 10
outbound_buffer_bytes = 2097152
publish_per_s = 10.0
publish_burst = 50
bad_signatures_per_minute = 3
topic_quota_bundles = 40
catch_up_page_bytes = 524288
send_stall_s = 2.0
invite_guess_back_s = 3.0
max_topics = 60
registrations_per_connection = 16
accept_peers = ["{peer}"]
"""

[(QUOTA_KEYS, QUOTA_BUNDLES), (FLOOD_KEYS, FLOOD_BUNDLES), (SIG_KEYS, SIG_BUNDLES)] = make_pool(
    groups=3, per_group=45
)
# An honest group's bundles, one published in each round trip measured during an attack.
[(HONEST_KEYS, HONEST_BUNDLES)] = make_pool(groups=1, per_group=12, seed=2)
PEER = SigningKey(bytes(range(32)))  # a peer relay this relay accepts, which misbehaves
# 32 bundles of 256 KiB: 8 MiB, more than the relay's outbound limit (2 MiB) and what the
# kernel buffers for a client whose receive window stays closed.
[(BIG_KEYS, BIG_BUNDLES)] = make_pool(groups=1, per_group=32, extra_bytes=250_000, seed=1)


@pytest.fixture
def limited_relay(tmp_path: Path, relay_store: list[str]) -> Iterator[Relay]:
    config = tmp_path / "relay.toml"
    config.write_text(SETTINGS.format(peer=PEER.public.hex()))
    relay = start_relay(tmp_path / "relay", config=config, extra=relay_store)
    yield relay
    relay.kill()


class Client:
    """A raw protocol client from an address of its choosing."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str, ip: str) -> Client:
        ws = await http.ws_connect(url, headers={"X-Forwarded-For": ip}, max_msg_size=0)
        client = cls(ws)
        await client.send(Hello(versions=[PROTOCOL_VERSION], role="node", agent="test"))
        await client.receive()  # welcome
        return client

    async def send(self, frame: Frame) -> None:
        await self.ws.send_bytes(encode_frame(frame))

    async def receive(self, timeout: float = 20) -> Frame:
        message = await self.ws.receive(timeout=timeout)
        assert message.type == aiohttp.WSMsgType.BINARY, (message.type, self.ws.close_code)
        return decode_frame(message.data)

    async def register(self, keys: EpochKeys) -> None:
        await self.send(
            Register(
                topic=keys.topic, relay_key=keys.relay_key.public, proof=registration_proof(keys)
            )
        )

    async def publish_all(self, envelopes: list[bytes]) -> Counter[str]:
        """Publish them all at once; count the answers: ``ack`` or each error's code."""
        for envelope in envelopes:
            await self.send(Publish(envelope=envelope))
        answers: Counter[str] = Counter()
        while sum(answers.values()) < len(envelopes):
            frame = await self.receive()
            answers["ack" if isinstance(frame, Ack) else getattr(frame, "code", "?")] += 1
        return answers


async def _honest_round_trip(url: str, n: int) -> float:
    """An honest member's sync during an attack: one member publishes bundle ``n`` of the
    honest group and another, subscribed, receives it; seconds from connecting to that."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        writer = await Client.connect(http, url, "192.0.2.90")
        reader = await Client.connect(http, url, "192.0.2.91")
        await writer.register(HONEST_KEYS)
        await reader.send(Subscribe(topic=HONEST_KEYS.topic, after=0))
        while not isinstance(await reader.receive(timeout=10), CaughtUp):
            pass
        await writer.send(Publish(envelope=HONEST_BUNDLES[n]))
        assert isinstance(await writer.receive(timeout=10), Ack)
        while True:
            frame = await reader.receive(timeout=10)
            if isinstance(frame, Deliver) and frame.envelope == HONEST_BUNDLES[n]:
                break
        took = time.monotonic() - started
        await writer.ws.close()
        await reader.ws.close()
    return took


def _metrics(relay: Relay) -> str:
    url = relay.url.replace("ws://", "http://") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our own loopback relay
        return str(answer.read().decode())


def _never_reading_subscriber(
    url: str, topic: bytes, ready: threading.Event, ip: str = "198.51.100.9"
) -> socket.socket:
    """A client that subscribes and then never reads: a raw socket with a small receive
    buffer, speaking just enough WebSocket to say hello and subscribe."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Forwarded-For: {ip}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head, head
    for frame in (
        Hello(versions=[PROTOCOL_VERSION], role="node", agent="never reads"),
        Subscribe(topic=topic, after=0),
    ):
        payload = encode_frame(frame)
        assert len(payload) < 126
        # A masked binary frame (clients must mask; a zero mask keeps the bytes as they are).
        sock.sendall(bytes([0x82, 0x80 | len(payload)]) + bytes(4) + payload)
        if isinstance(frame, Hello):  # the welcome is read, as the protocol asks; no more
            welcome = sock.recv(2)
            sock.recv(welcome[1] & 0x7F if welcome[1] & 0x7F < 126 else 0)
    ready.set()
    return sock


def test_abuse_gets_explicit_errors_while_an_honest_group_keeps_syncing(
    tmp_path: Path, limited_relay: Relay
) -> None:
    relay = limited_relay
    ada, ben, cleo = group_of_three(tmp_path, relay.url)
    honest_edits = iter(range(1000))

    async def honest_group_keeps_working(stop: asyncio.Event) -> int:
        """Ada and Ben edit and sync throughout; how many rounds they managed."""
        rounds = 0
        while not stop.is_set() or rounds < 2:
            n = next(honest_edits)
            await asyncio.to_thread(ada, "resource", "add", f"Tool {n}")
            for cli in (ada, ben):
                result = await asyncio.to_thread(cli, "sync", "--json")
                assert json.loads(result.out)["relays_failed"] == []
            rounds += 1
        return rounds

    async def abuse(http: aiohttp.ClientSession) -> dict[str, object]:
        seen: dict[str, object] = {}
        # A flood of idle connections from one address: the first ten are let in (and
        # closed once they fail to say hello in time), the rest refused at once.
        statuses: Counter[int] = Counter()
        idle = []
        for _ in range(40):
            try:
                idle.append(
                    await http.ws_connect(relay.url, headers={"X-Forwarded-For": "203.0.113.1"})
                )
            except aiohttp.WSServerHandshakeError as exc:
                statuses[exc.status] += 1
        seen["refused"] = statuses
        # Meanwhile a newcomer from elsewhere connects and says hello within 1 s.
        started = time.monotonic()
        newcomer = await Client.connect(http, relay.url, "192.0.2.50")
        seen["newcomer_s"] = time.monotonic() - started
        await newcomer.ws.close()
        closes = []
        for ws in idle:
            message = await ws.receive(timeout=10)
            closes.append((message.type, ws.close_code))
        seen["idle_closed"] = closes

        # A publish flood from one connection: the burst passes, then explicit refusals.
        flooder = await Client.connect(http, relay.url, "203.0.113.2")
        await flooder.register(FLOOD_KEYS)
        seen["flood"] = await flooder.publish_all(FLOOD_BUNDLES[:40] * 4)  # within the quota

        # Bundles whose admission signature fails: refused, then the address is blocked.
        signer = await Client.connect(http, relay.url, "203.0.113.3")
        await signer.register(SIG_KEYS)
        seen["bad_signatures"] = await signer.publish_all(
            [forged(e) for e in SIG_BUNDLES[:6]] + SIG_BUNDLES[6:8]
        )

        # A topic at its quota: explicit refusals past 40 bundles, nothing evicted.
        filler = await Client.connect(http, relay.url, "203.0.113.4")
        await filler.register(QUOTA_KEYS)
        seen["quota"] = await filler.publish_all(QUOTA_BUNDLES)
        # ... while a bundle stored already is acknowledged again (a node missed the ack).
        seen["quota_again"] = await filler.publish_all(QUOTA_BUNDLES[:2])

        # A subscriber that never reads is cut off; one that reads gets everything.
        ready = threading.Event()
        stuck = await asyncio.to_thread(_never_reading_subscriber, relay.url, BIG_KEYS.topic, ready)
        reader = await Client.connect(http, relay.url, "203.0.113.5")
        await reader.send(Subscribe(topic=BIG_KEYS.topic, after=0))
        assert (await reader.receive()).__class__.__name__ == "CaughtUp"
        big = await Client.connect(http, relay.url, "203.0.113.6")
        await big.register(BIG_KEYS)
        await asyncio.sleep(0.3)  # the stuck subscriber's hello and subscribe are read

        async def read_all() -> int:
            got = 0
            while got < len(BIG_BUNDLES):
                got += isinstance(await reader.receive(), Deliver)
            return got

        reading = asyncio.create_task(read_all())
        answers: Counter[str] = Counter()
        for start in range(0, len(BIG_BUNDLES), 4):  # 1 MiB at a time, as a node uploads
            answers += await big.publish_all(BIG_BUNDLES[start : start + 4])
        seen["big"] = answers
        seen["reader_got"] = await reading
        stuck.close()
        for client in (flooder, signer, filler, reader, big):
            await client.ws.close()
        return seen

    async def run() -> tuple[int, dict[str, object]]:
        stop = asyncio.Event()
        honest = asyncio.create_task(honest_group_keeps_working(stop))
        async with aiohttp.ClientSession() as http:
            try:
                seen = await abuse(http)
            finally:
                stop.set()
        return await honest, seen

    rounds, seen = asyncio.run(run())

    assert seen["refused"] == {503: 30}
    assert float(seen["newcomer_s"]) < 1.0, seen["newcomer_s"]  # type: ignore[arg-type]
    assert seen["idle_closed"] == [(aiohttp.WSMsgType.CLOSE, 1008)] * 10
    flood: Counter[str] = seen["flood"]  # type: ignore[assignment]
    assert set(flood) == {"ack", "rate-limited"}
    assert 50 <= flood["ack"] <= 70, flood
    assert flood["rate-limited"] >= 90, flood
    assert seen["bad_signatures"] == {"bad-signature": 4, "blocked": 4}
    assert seen["quota"] == {"ack": 40, "quota-exceeded": 5}
    assert seen["quota_again"] == {"ack": 2}
    assert seen["big"] == {"ack": 32}
    assert seen["reader_got"] == 32

    metrics = _metrics(relay)
    for reason in ("connection_limit", "handshake_timeout", "rate-limited", "bad-signature"):
        assert f'hearth_relay_rejections_total{{reason="{reason}"}}' in metrics, reason
    assert 'hearth_relay_rejections_total{reason="slow_consumer"} 1.0' in metrics
    assert 'hearth_relay_rejections_total{reason="quota-exceeded"} 5.0' in metrics
    sent = re.search(r"^hearth_relay_bytes_out_total (\S+)$", metrics, re.MULTILINE)
    assert sent is not None
    assert float(sent.group(1)) > 32 * 256 * 1024  # the big bundles, to the reader
    assert relay.proc.poll() is None

    # The honest group synced throughout and converged; Cleo, away all along, catches up.
    assert rounds >= 2
    cleo("sync")
    assert state(ada) == state(ben) == state(cleo)


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (or another /proc status field), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def _rejections(relay: Relay, reason: str) -> int:
    found = re.search(
        rf'^hearth_relay_rejections_total{{reason="{reason}"}} (\S+)$', _metrics(relay), re.M
    )
    return int(float(found.group(1))) if found else 0


def test_never_reading_catch_up_subscribers_hold_bounded_memory_and_are_cut_off(
    limited_relay: Relay,
) -> None:
    """20 subscribers ask for a topic of 8 MiB (32 bundles of 256 KiB) and never read.
    Each holds at most a page (512 KiB) and what its socket buffers, not the topic: peak
    RSS grows by less than 20 x the outbound buffer (2 MiB), every one is cut off once
    its sending has stalled for 2 s, and memory goes back near where it was."""
    relay = limited_relay
    pid = relay.proc.pid

    async def fill() -> None:
        async with aiohttp.ClientSession() as http:
            owner = await Client.connect(http, relay.url, "203.0.113.20")
            await owner.register(BIG_KEYS)
            for start in range(0, len(BIG_BUNDLES), 4):
                assert await owner.publish_all(BIG_BUNDLES[start : start + 4]) == {"ack": 4}
            await owner.ws.close()

    asyncio.run(fill())
    time.sleep(0.5)
    baseline = _rss_mib(pid)
    ready = threading.Event()
    stuck = [
        _never_reading_subscriber(relay.url, BIG_KEYS.topic, ready, ip=f"198.51.100.{n}")
        for n in range(20)
    ]
    honest = asyncio.run(_honest_round_trip(relay.url, 0))  # while they hang on
    peak = baseline
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and _rejections(relay, "slow_consumer") < 20:
        peak = max(peak, _rss_mib(pid))
        time.sleep(0.05)
    cut_off = _rejections(relay, "slow_consumer")
    for sock in stuck:
        sock.close()
    time.sleep(1.0)
    after = _rss_mib(pid)
    print(
        f"relay RSS: idle {baseline:.1f} MiB, peak {peak:.1f} MiB, after {after:.1f} MiB; "
        f"honest round trip {honest * 1000:.0f} ms"
    )
    assert honest < 2.0
    assert cut_off == 20
    assert peak - baseline < 20 * 2, (baseline, peak)  # 20 x the outbound buffer, in MiB
    assert after - baseline < 8, (baseline, after)
    assert relay.proc.poll() is None


def _info(relay: Relay) -> dict[str, object]:
    url = relay.url.replace("ws://", "http://") + "/info"
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our own loopback relay
        info: dict[str, object] = json.loads(answer.read())
    return info


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _half_a_request(url: str, source: str) -> socket.socket:
    """A slowloris socket: connected from ``source``, half a request sent, then nothing."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect((host, int(port)))
    with contextlib.suppress(ConnectionError):  # dropped by the relay already
        sock.sendall(b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n")
    sock.setblocking(False)
    return sock


def _dropped(sock: socket.socket) -> bool:
    """Whether the relay has closed this socket (without waiting)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def test_slowloris_and_a_low_descriptor_limit_leave_room_for_honest_clients(
    tmp_path: Path, relay_store: list[str]
) -> None:
    """The relay runs under a descriptor limit of 256 with max_connections at its default
    (2,000): it says plainly what to set and takes only what fits. Then one address
    opens 300 sockets that send half an HTTP request and stop: 10 are kept (its share)
    and the rest dropped at once; those 10 are dropped after the handshake timeout; the
    relay never holds more than a few dozen descriptors, and an honest client connects
    and says hello within 1 s throughout. Then 25 addresses do the same, 250 sockets in
    all: the oldest half-open ones make room, and honest clients still get in."""
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\nhandshake_timeout_s = 1.5\nmax_connections_per_ip = 10\n")
    relay = start_relay(
        tmp_path / "relay",
        config=config,
        extra=relay_store,
        prefix=["prlimit", "--nofile=256:256", "--"],
    )
    try:
        limits = _info(relay)["limits"]
        assert isinstance(limits, dict)
        assert limits["max_connections"] == 256 - 192  # room for a batch being accepted
        log = (relay.data / "relay.log").read_text()
        assert "too few for max_connections = 2000" in log
        assert "LimitNOFILE=2192" in log
        pid = relay.proc.pid
        before = _descriptors(pid)
        attack = [_half_a_request(relay.url, "127.0.0.2") for _ in range(300)]
        # Refused sockets are accepted a batch at a time and dropped at the next turn of
        # the loop: for a moment up to a batch (the listen backlog) are open.
        transient = _descriptors(pid)
        time.sleep(0.3)
        dropped_at_once = sum(_dropped(sock) for sock in attack)
        most = _descriptors(pid)

        async def honest() -> float:
            async with aiohttp.ClientSession() as http:
                started = time.monotonic()
                client = await Client.connect(http, relay.url, "192.0.2.60")
                took = time.monotonic() - started
                await client.ws.close()
                return took

        took = asyncio.run(honest())
        round_trip = asyncio.run(_honest_round_trip(relay.url, 0))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not all(_dropped(s) for s in attack):
            most = max(most, _descriptors(pid))
            time.sleep(0.1)
        kept_until_timeout = sum(not _dropped(s) for s in attack)
        dropped_in_the_end = sum(_dropped(s) for s in attack)
        for sock in attack:
            sock.close()
        print(
            f"descriptors: {before} before, {transient} in the first moment, at most {most} "
            "under attack; "
            f"honest hello in {took * 1000:.0f} ms, round trip {round_trip * 1000:.0f} ms"
        )
        assert round_trip < 2.0
        assert dropped_at_once == 290
        assert kept_until_timeout == 0
        assert dropped_in_the_end == 300
        assert most - before <= 10 + 5, (before, most)
        # How many refused sockets are open at one moment depends on how many accept
        # batches a loaded machine lets in before the loop drops them (138 quiet, 171 seen
        # at load 14): the bound kept is the one designed for, below the limit with the
        # room set aside for a batch being accepted.
        assert transient < 256, (before, transient)
        assert took < 1.0

        # From many addresses (25, ten sockets each: within each one's share), more
        # half-open sockets than the relay takes in all (64): the oldest make room, so an
        # honest client still gets in at once, and the descriptors stay under the limit.
        spread = [_half_a_request(relay.url, f"127.0.0.{10 + n // 10}") for n in range(250)]
        time.sleep(0.3)
        spread_took = asyncio.run(honest())
        spread_round_trip = asyncio.run(_honest_round_trip(relay.url, 1))
        spread_most = _descriptors(pid)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not all(_dropped(s) for s in spread):
            time.sleep(0.1)
        spread_left = sum(not _dropped(s) for s in spread)
        for sock in spread:
            sock.close()
        print(
            f"from 25 addresses: at most {spread_most} descriptors; honest hello in "
            f"{spread_took * 1000:.0f} ms, round trip {spread_round_trip * 1000:.0f} ms"
        )
        assert spread_took < 2.0
        assert spread_round_trip < 2.0
        assert spread_most - before <= 64 + 5
        assert spread_left == 0
        log = (relay.data / "relay.log").read_text()
        assert "out of system resource" not in log
        assert "Too many open files" not in log
        assert relay.proc.poll() is None
    finally:
        relay.kill()


def test_nameplates_cannot_be_tried_in_seconds(limited_relay: Relay) -> None:
    """An invite waits under nameplate 500. One connection tries all 999 nameplates, then
    40 addresses try 25 each around it: the relay lets 5 guesses through from the one
    address and 20 in all (a few more as guesses come back), never the open invite's
    number, and the person it is for still joins, at worst after a guess comes back."""
    relay = limited_relay

    async def run() -> tuple[Counter[str], Counter[str], list[str]]:
        async with aiohttp.ClientSession() as http:
            inviter = await Client.connect(http, relay.url, "192.0.2.70")
            await inviter.send(Mailbox(nameplate=500, create=True))
            assert isinstance(await inviter.receive(), Mailbox)
            await inviter.send(Mailbox(nameplate=500, body=b"spake2 message"))

            async def guess(client: Client, nameplates: range) -> Counter[str]:
                for n in nameplates:
                    await client.send(Mailbox(nameplate=n, body=b"guess"))
                answers: Counter[str] = Counter()
                for _ in nameplates:
                    frame = await client.receive()
                    answers[frame.code if isinstance(frame, Error) else "FOUND"] += 1
                return answers

            guesser = await Client.connect(http, relay.url, "203.0.113.30")
            one_address = await guess(guesser, range(1, 1000))
            many: Counter[str] = Counter()
            for n in range(40):
                other = await Client.connect(http, relay.url, f"198.18.0.{n}")
                many += await guess(other, range(480 + n % 5 * 5, 505 + n % 5 * 5))
                await other.ws.close()
            # Right after such an attack a joiner may have to wait for a guess to come
            # back (here 3 s, an hour's twentieth by default); the invite is still open.
            joiner = await Client.connect(http, relay.url, "192.0.2.71")
            joined = []
            for _ in range(3):
                await joiner.send(Mailbox(nameplate=500, body=b"the joiner"))
                frame = await joiner.receive()
                joined.append(frame.code if isinstance(frame, Error) else frame.TYPE)
                if isinstance(frame, Mailbox):
                    break
                await asyncio.sleep(3.1)
            joined.append(type(await inviter.receive()).__name__)
            honest = await _honest_round_trip(relay.url, 0)
            print(f"honest round trip after the guessing: {honest * 1000:.0f} ms")
            assert honest < 2.0
            return one_address, many, joined

    one_address, many, joined = asyncio.run(run())
    assert one_address == {"no-such-mailbox": 5, "too-many-guesses": 994}
    assert "FOUND" not in many
    assert 15 <= many["no-such-mailbox"] <= 17, many  # what was left of the relay's 20
    # The inviter's message in (perhaps after a wait), the joiner's out.
    assert joined[-2:] == ["mailbox", "Mailbox"], joined
    assert set(joined[:-2]) <= {"too-many-guesses"}, joined


def test_what_clients_send_cannot_flood_the_log_or_put_addresses_in_it(
    limited_relay: Relay,
) -> None:
    """300 error frames of 256 KiB from one client, a hello listing 100,000 versions, and
    200 clients from 200 addresses each sending a text frame: the relay's log grows by
    less than 64 KiB (the text cut short, repeats summarised) and holds no address."""
    relay = limited_relay
    log_file = relay.data / "relay.log"
    before = log_file.stat().st_size

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            talker = await Client.connect(http, relay.url, "203.0.113.40")
            for n in range(300):
                await talker.send(Error(code=f"e{n}", message="x" * 256 * 1024))
            await talker.send(Subscribe(topic=bytes(32), after=0))  # answered once all read
            await talker.receive()
            ws = await http.ws_connect(relay.url, headers={"X-Forwarded-For": "203.0.113.41"})
            await ws.send_bytes(
                encode_frame(Hello(versions=[99] * 100_000, role="node", agent="y" * 50_000))
            )
            assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
            for n in range(200):
                ws = await http.ws_connect(
                    relay.url, headers={"X-Forwarded-For": f"198.18.{n // 250}.{n % 250}"}
                )
                await ws.send_str("not the protocol")
                assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
            await talker.ws.close()
            honest = await _honest_round_trip(relay.url, 0)
            print(f"honest round trip after the flood: {honest * 1000:.0f} ms")
            assert honest < 2.0

    asyncio.run(run())
    time.sleep(0.5)
    log = log_file.read_text()
    grown = log_file.stat().st_size - before
    print(f"log grew by {grown} bytes")
    assert grown < 64 * 1024, grown
    assert re.search(r"\d+\.\d+\.\d+\.\d+", log) is None
    assert relay.proc.poll() is None


def _new_keys(n: int) -> list[EpochKeys]:
    return [
        EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
        for _ in range(n)
    ]


async def _register_all(client: Client, keys: list[EpochKeys]) -> Counter[str]:
    """Register every topic; then the refusals by code (a registration taken says nothing:
    a subscription after them all, answered once they are read, marks the end)."""
    for key in keys:
        await client.register(key)
    await client.send(Subscribe(topic=bytes(32), after=0))
    answers: Counter[str] = Counter()
    while not isinstance(frame := await client.receive(), CaughtUp):
        answers[getattr(frame, "code", "?")] += 1
    answers["registered"] = len(keys) - sum(answers.values())
    return answers


def test_registrations_are_limited_per_connection_per_address_and_relay_wide(
    limited_relay: Relay,
) -> None:
    """One connection registers 300 topics: 16 are taken (its share for its life), the
    rest refused; 10 more addresses register 16 each until the relay holds its 60 topics
    and says "relay-full"; a topic registered already is registered again without limit
    (a node does it each time it connects); /info shows the limits."""
    relay = limited_relay

    async def run() -> tuple[Counter[str], Counter[str], Counter[str]]:
        async with aiohttp.ClientSession() as http:
            await _honest_round_trip(relay.url, 0)  # the honest group is here first
            one = await Client.connect(http, relay.url, "203.0.113.50")
            first = _new_keys(300)
            from_one = await _register_all(one, first)
            others: Counter[str] = Counter()
            for n in range(10):
                other = await Client.connect(http, relay.url, f"198.19.0.{n}")
                others += await _register_all(other, _new_keys(16))
                await other.ws.close()
            again = await Client.connect(http, relay.url, "203.0.113.50")
            known = await _register_all(again, first[:16] * 3)
            # The honest group's topic was registered before the relay filled up.
            honest = await _honest_round_trip(relay.url, 1)
            print(f"honest round trip with the relay full: {honest * 1000:.0f} ms")
            assert honest < 2.0
            return from_one, others, known

    from_one, others, known = asyncio.run(run())
    assert from_one == {"registered": 16, "too-many-registrations": 284}
    assert others == {"registered": 60 - 17, "relay-full": 160 - 43}
    assert known == {"registered": 48}
    limits = _info(relay)["limits"]
    assert isinstance(limits, dict)
    assert limits["max_topics"] == 60
    assert limits["registrations_per_connection"] == 16


def test_a_client_idle_after_its_welcome_is_not_timed_out(limited_relay: Relay) -> None:
    """The handshake timeout (1.5 s here) ends at the welcome: a client that says hello
    and then waits 2.5 s before subscribing is served, not closed."""

    async def run() -> Frame:
        async with aiohttp.ClientSession() as http:
            client = await Client.connect(http, limited_relay.url, "192.0.2.80")
            await asyncio.sleep(2.5)
            await client.send(Subscribe(topic=bytes(32), after=0))
            return await client.receive(timeout=5)

    assert isinstance(asyncio.run(run()), CaughtUp)


def _raw_frame(frame: Frame) -> bytes:
    """A client's (masked, with a zero mask) binary WebSocket frame of any length."""
    payload = encode_frame(frame)
    n = len(payload)
    if n < 126:
        header = bytes([0x82, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x82, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + bytes(4) + payload


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        assert more, "the relay closed the connection"
        data += more
    return data


def _read_raw(sock: socket.socket) -> Frame:
    """One unmasked frame from the relay."""
    first = _read_exactly(sock, 2)
    n = first[1] & 0x7F
    if n == 126:
        n = int.from_bytes(_read_exactly(sock, 2), "big")
    elif n == 127:
        n = int.from_bytes(_read_exactly(sock, 8), "big")
    return decode_frame(_read_exactly(sock, n))


def test_a_peer_relay_that_floods_junk_then_never_reads_is_cut_off(limited_relay: Relay) -> None:
    """A peer relay the operator accepted proves who it is, sends 300 bundles that are
    not bundles, asks for everything stored (8 MiB) and never reads: the junk is refused
    and counted, the link is cut off once its sending stalls for 2 s, memory stays within
    a few pages, and an honest member's publish still reaches the others."""
    relay = limited_relay
    pid = relay.proc.pid

    async def fill() -> None:
        async with aiohttp.ClientSession() as http:
            owner = await Client.connect(http, relay.url, "203.0.113.60")
            await owner.register(BIG_KEYS)
            for start in range(0, len(BIG_BUNDLES), 4):
                assert await owner.publish_all(BIG_BUNDLES[start : start + 4]) == {"ack": 4}
            await owner.ws.close()

    asyncio.run(fill())
    time.sleep(0.5)
    baseline = _rss_mib(pid)
    host, port = relay.url.removeprefix("ws://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "X-Forwarded-For: 198.51.100.200\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head, head
    sock.sendall(_raw_frame(Hello(versions=[PROTOCOL_VERSION], role="relay", agent="bad peer")))
    welcome = _read_raw(sock)
    assert isinstance(welcome, Welcome)
    proof = peer_proof(PEER, welcome.challenge, welcome.relay_id)
    sock.sendall(_raw_frame(Peer(relay_id=PEER.public, proof=proof)))
    assert isinstance(_read_raw(sock), Mirror)  # the relay asks for what it lacks
    for n in range(300):
        junk = Deliver(topic=BIG_KEYS.topic, cursor=n + 1, envelope=os.urandom(2000))
        sock.sendall(_raw_frame(junk))
    sock.sendall(_raw_frame(Mirror(after=0)))  # everything, please; and never read again
    honest = asyncio.run(_honest_round_trip(relay.url, 0))
    peak = baseline
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _rejections(relay, "slow_consumer") < 1:
        peak = max(peak, _rss_mib(pid))
        time.sleep(0.05)
    cut_off = _rejections(relay, "slow_consumer")
    junk_refused = _rejections(relay, "bad_envelope")
    sock.close()
    print(
        f"relay RSS: idle {baseline:.1f} MiB, peak {peak:.1f} MiB with the peer stuck; "
        f"honest round trip {honest * 1000:.0f} ms"
    )
    assert junk_refused == 300
    assert cut_off == 1
    assert peak - baseline < 2 * 2, (baseline, peak)  # the outbound buffer: 2 MiB
    assert honest < 2.0
    assert relay.proc.poll() is None
