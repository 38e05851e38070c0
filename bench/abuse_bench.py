"""A relay open to the internet against a hostile client (issue 20), with realistic sizes.

    python bench/abuse_bench.py [--subscribers 20] [--bundles 64] [--slowloris 1100]

One ``hearth-relay`` process on 127.0.0.1 with its default limits (but ``send_stall_s``
10 s, so the run ends sooner), under a descriptor limit of 1,024 (the usual one), is
attacked in turn, and between the attacks an honest member publishes a bundle that
another member receives (the honest round trip, against the same without an attack):

- ``catch_up``: ``--subscribers`` clients subscribe to a topic of ``--bundles`` bundles
  of 1 MiB and never read. Figures: peak and final RSS against the issue's target
  (under 2 x the idle RSS + subscribers x the 8 MiB outbound buffer).
- ``slowloris``: ``--slowloris`` sockets from 55 addresses send half an HTTP request and
  stop. Figures: descriptors held, whether an honest client still connected.
- ``log_flood``: 300 error frames of 1 MiB, and 500 clients each sending a text frame.
  Figure: what the relay's log grew by.
- ``nameplates``: one connection tries all 999 invite numbers. Figures: how many were
  let through and how long trying them all would take at the limits.
- ``registrations``: one connection registers 5,000 topics. Figure: how many it got.

The result goes to bench/results/abuse-TIMESTAMP.json. Attacking addresses are the
loopback's 127.0.0.2 and up (a socket can be bound to any of 127.0.0.0/8 on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from hearth.crypto import SigningKey
from hearth.protocol.bundle import EpochKeys, Inner, registration_proof, seal_bundle
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    CaughtUp,
    Deliver,
    Error,
    Frame,
    Hello,
    Mailbox,
    Publish,
    Register,
    Subscribe,
    decode_frame,
    encode_frame,
)

sys.path.insert(0, str(Path(__file__).parent))
from sync_bench import save_result

MiB = 1024 * 1024


def sealed(keys: EpochKeys, count: int, extra: int) -> list[bytes]:
    """``count`` bundles of a group, each ``extra`` random bytes big (and a little more)."""
    device = SigningKey.generate()
    out = []
    for seq in range(1, count + 1):
        inner = Inner(
            kind="content",
            group_id=keys.group_id,
            epoch_id=keys.epoch_id,
            author=device.public,
            seq=seq,
            prev=b"",
            auth_heads=(),
            created_at=0,
            payload=random.randbytes(extra),
        )
        out.append(seal_bundle(inner, keys=keys, device=device, salt=os.urandom(32)).encode())
    return out


def new_keys() -> EpochKeys:
    return EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))


class Relay:
    def __init__(self, data: Path) -> None:
        config = data / "relay.toml"
        data.mkdir(parents=True, exist_ok=True)
        config.write_text("[relay]\nsend_stall_s = 10.0\n")
        self.log = data / "relay.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [
                    *("prlimit", "--nofile=1024:1024", "--"),
                    *(sys.executable, "-m", "relay.cli", "--port", "0"),
                    *("--data", str(data), "--config", str(config)),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip().removeprefix("listening on ")
        host, port = self.url.removeprefix("ws://").rsplit(":", 1)
        self.address = (host, int(port))

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rejections(self, reason: str) -> int:
        url = self.url.replace("ws://", "http://") + "/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            text = answer.read().decode()
        key = f'hearth_relay_rejections_total{{reason="{reason}"}} '
        found = [line for line in text.splitlines() if line.startswith(key)]
        return int(float(found[0].split()[-1])) if found else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str) -> Client:
        ws = await http.ws_connect(url, max_msg_size=0)
        client = cls(ws)
        await client.send(Hello(versions=[PROTOCOL_VERSION], role="node", agent="bench"))
        await client.receive()
        return client

    async def send(self, frame: Frame) -> None:
        await self.ws.send_bytes(encode_frame(frame))

    async def receive(self, timeout: float = 30) -> Frame:
        message = await self.ws.receive(timeout=timeout)
        assert message.type == aiohttp.WSMsgType.BINARY, message
        return decode_frame(message.data)

    async def register(self, keys: EpochKeys) -> None:
        relay_key = keys.relay_key.public
        await self.send(
            Register(topic=keys.topic, relay_key=relay_key, proof=registration_proof(keys))
        )


HONEST = new_keys()
HONEST_BUNDLES = sealed(HONEST, 60, 2000)
_next_honest = iter(HONEST_BUNDLES)


async def honest_round_trip(url: str) -> float:
    """Seconds from two members connecting to one's new bundle reaching the other."""
    bundle = next(_next_honest)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        writer, reader = await Client.connect(http, url), await Client.connect(http, url)
        await writer.register(HONEST)
        await reader.send(Subscribe(topic=HONEST.topic, after=0))
        while not isinstance(await reader.receive(), CaughtUp):
            pass
        await writer.send(Publish(envelope=bundle))
        assert isinstance(await writer.receive(), Ack)
        while not (
            isinstance(frame := await reader.receive(), Deliver) and frame.envelope == bundle
        ):
            pass
        took = time.monotonic() - started
        await writer.ws.close()
        await reader.ws.close()
    return took


def round_trips(url: str, n: int = 3) -> float:
    """The median honest round trip, in ms."""
    return round(statistics.median(asyncio.run(honest_round_trip(url)) for _ in range(n)) * 1000, 1)


def raw_upgrade(relay: Relay, source: str, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(relay.address)
    return sock


def masked(frame: Frame) -> bytes:
    payload = encode_frame(frame)
    assert len(payload) < 126
    return bytes([0x82, 0x80 | len(payload)]) + bytes(4) + payload


def never_reading(relay: Relay, topic: bytes, source: str) -> socket.socket:
    sock = raw_upgrade(relay, source, rcvbuf=4096)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    sock.sendall(masked(Hello(versions=[PROTOCOL_VERSION], role="node", agent="never reads")))
    header = sock.recv(2)
    sock.recv(header[1] & 0x7F)  # the welcome, read as the protocol asks; nothing more
    sock.sendall(masked(Subscribe(topic=topic, after=0)))
    return sock


def catch_up(relay: Relay, subscribers: int, bundles: int) -> dict[str, object]:
    keys = new_keys()
    big = sealed(keys, bundles, 1_000_000)

    async def fill() -> None:
        async with aiohttp.ClientSession() as http:
            owner = await Client.connect(http, relay.url)
            await owner.register(keys)
            for bundle in big:
                await owner.send(Publish(envelope=bundle))
                assert isinstance(await owner.receive(), Ack)
            await owner.ws.close()

    asyncio.run(fill())
    time.sleep(1)
    idle = relay.rss_mib()
    stuck = [never_reading(relay, keys.topic, f"127.0.0.{3 + n}") for n in range(subscribers)]
    during = round_trips(relay.url)
    peak, started = idle, time.monotonic()
    while relay.rejections("slow_consumer") < subscribers and time.monotonic() - started < 60:
        peak = max(peak, relay.rss_mib())
        time.sleep(0.05)
    cut_after = time.monotonic() - started
    for sock in stuck:
        sock.close()
    time.sleep(2)
    target = 2 * idle + subscribers * 8
    return {
        "topic_mib": round(sum(map(len, big)) / MiB, 1),
        "idle_rss_mib": round(idle, 1),
        "peak_rss_mib": round(peak, 1),
        "target_peak_rss_mib": round(target, 1),
        "peak_within_target": peak < target,
        "rss_after_they_left_mib": round(relay.rss_mib(), 1),
        "all_cut_off_after_s": round(cut_after, 1),
        "honest_round_trip_ms": during,
    }


def slowloris(relay: Relay, sockets: int) -> dict[str, object]:
    before = relay.descriptors()
    attack = []
    refused_connects = 0
    for n in range(sockets):
        try:
            sock = raw_upgrade(relay, f"127.0.1.{1 + n // 20}")
            sock.sendall(b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n")
            attack.append(sock)
        except OSError:
            refused_connects += 1
    time.sleep(0.5)
    most = relay.descriptors()
    during = round_trips(relay.url)
    most = max(most, relay.descriptors())
    for sock in attack:
        sock.close()
    log = relay.log.read_text()
    return {
        "sockets": sockets,
        "descriptors_before": before,
        "descriptors_held_under_attack": most,
        "out_of_descriptors_logged": "out of system resource" in log or "Too many open" in log,
        "honest_round_trip_ms": during,
    }


def log_flood(relay: Relay) -> dict[str, object]:
    before = relay.log.stat().st_size

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            talker = await Client.connect(http, relay.url)
            for n in range(300):
                await talker.send(Error(code=f"e{n}", message="x" * (MiB - 200)))
            await talker.send(Subscribe(topic=bytes(32), after=0))
            await talker.receive(timeout=60)
            await talker.ws.close()
            for _ in range(500):
                ws = await http.ws_connect(relay.url)
                await ws.send_str("not the protocol")
                await ws.receive(timeout=10)

    started = time.monotonic()
    asyncio.run(run())
    took = time.monotonic() - started
    return {
        "sent_mib": 300,
        "seconds": round(took, 1),
        "log_grew_bytes": relay.log.stat().st_size - before,
        "honest_round_trip_ms": round_trips(relay.url),
    }


def nameplates(relay: Relay) -> dict[str, object]:
    async def run() -> dict[str, int]:
        async with aiohttp.ClientSession() as http:
            guesser = await Client.connect(http, relay.url)
            for n in range(1, 1000):
                await guesser.send(Mailbox(nameplate=n, body=b"guess"))
            answers: dict[str, int] = {}
            for _ in range(999):
                frame = await guesser.receive()
                code = frame.code if isinstance(frame, Error) else "found"
                answers[code] = answers.get(code, 0) + 1
            return answers

    answers = asyncio.run(run())
    return {
        "answers": answers,
        "hours_to_try_all_999_from_one_address": round((999 - 5) * 60 / 3600, 1),
        "hours_to_try_all_999_from_many_addresses": round((999 - 20) * 60 / 3600, 1),
        "invite_lives_hours": 1,
        "honest_round_trip_ms": round_trips(relay.url),
    }


def registrations(relay: Relay, count: int = 5000) -> dict[str, object]:
    async def run() -> dict[str, int]:
        async with aiohttp.ClientSession() as http:
            one = await Client.connect(http, relay.url)
            for _ in range(count):
                await one.register(new_keys())
            await one.send(Subscribe(topic=bytes(32), after=0))
            refused: dict[str, int] = {}
            while not isinstance(frame := await one.receive(), CaughtUp):
                code = frame.code if isinstance(frame, Error) else "?"
                refused[code] = refused.get(code, 0) + 1
            return refused

    refused = asyncio.run(run())
    return {
        "tried": count,
        "registered": count - sum(refused.values()),
        "refused": refused,
        "honest_round_trip_ms": round_trips(relay.url),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--bundles", type=int, default=64, help="1 MiB bundles in the topic")
    parser.add_argument("--slowloris", type=int, default=1100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        relay = Relay(Path(tmp) / "relay")
        try:
            result: dict[str, object] = {
                "benchmark": "abuse",
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "honest_round_trip_quiet_ms": round_trips(relay.url, 5),
            }
            result["catch_up"] = catch_up(relay, args.subscribers, args.bundles)
            result["slowloris"] = slowloris(relay, args.slowloris)
            result["log_flood"] = log_flood(relay)
            result["nameplates"] = nameplates(relay)
            result["registrations"] = registrations(relay)
        finally:
            relay.stop()
    save_result("abuse", result)


if __name__ == "__main__":
    main()
