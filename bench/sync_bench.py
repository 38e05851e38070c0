"""Sync benchmarks of the sync issue; writes a JSON result to bench/results/.

    python bench/sync_bench.py [--entries 2000] [--ingest 3000] [--idle 1000] [--catch-up-only]

Everything runs on 127.0.0.1 against a real ``hearth-relay`` process:
- wire overhead of a one-field edit (envelope and frame bytes against the raw change);
- relay ingest: durably acknowledged bundles per second from one publisher;
- propagation: a bundle published by one client delivered to another, with N idle
  connections open (p50/p99);
- memory per idle connection (relay RSS before and after N idle, handshaken connections),
  beside the bare aiohttp server of bench/fanout_bench.py holding as many;
- catch-up: a fresh device fetching a ledger of ``--entries`` entries through the relay,
  against the floor (loading the same saved document and decrypting its bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import aiohttp

from hearth.crypto import SigningKey, aead_open, aead_seal
from hearth.ledger import LedgerDoc
from hearth.net.sync_client import sync_relay
from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.protocol.bundle import EpochKeys, Inner, encode_changes, registration_proof, seal_bundle
from hearth.protocol.frames import Hello, Publish, Register, Subscribe, decode_frame, encode_frame

RESULTS = Path(__file__).parent / "results"
# A bare aiohttp WebSocket server that checks and stores nothing: every binary message goes
# to every other connection, and its sender gets b"ack". What the relay is compared with.
BARE_SERVER = """
import sys
from aiohttp import web, WSMsgType
clients = set()
async def handler(request):
    ws = web.WebSocketResponse(max_msg_size=2 * 1024 * 1024)
    await ws.prepare(request)
    clients.add(ws)
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            for other in list(clients):
                if other is not ws:
                    await other.send_bytes(msg.data)
            await ws.send_bytes(b"ack")
    clients.discard(ws)
    return ws
app = web.Application()
app.router.add_get("/", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]),
            print=lambda *a: print("ready", flush=True))
"""


def start_bare() -> tuple[subprocess.Popen[str], str]:
    """The bare server on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert bare.stdout is not None
    bare.stdout.readline()
    return bare, f"ws://127.0.0.1:{port}"


def start_relay(
    data: Path, config: Path | None = None, *extra: str
) -> tuple[subprocess.Popen[str], str]:
    """A ``hearth-relay`` on a free loopback port (with a config file and other options)."""
    settings = ["--config", str(config)] if config is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "--port", "0", "--data", str(data), *settings, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    return proc, line.removeprefix("listening on ")


def save_result(kind: str, result: dict[str, object]) -> Path:
    """Write a benchmark's result to bench/results/KIND-TIMESTAMP.json and print it."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def make_bundles(keys: EpochKeys, device: SigningKey, count: int) -> list[bytes]:
    out, prev = [], b""
    for seq in range(1, count + 1):
        inner = Inner(
            kind="content",
            group_id=keys.group_id,
            epoch_id=keys.epoch_id,
            author=device.public,
            seq=seq,
            prev=prev,
            auth_heads=(),
            created_at=seq,
            payload=encode_changes([("live", secrets.token_bytes(100), [])]),
        )
        envelope = seal_bundle(inner, keys=keys, device=device, salt=secrets.token_bytes(32))
        prev = envelope.id
        out.append(envelope.encode())
    return out


async def handshake(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url, max_msg_size=2 * 1024 * 1024)
    await ws.send_bytes(encode_frame(Hello(versions=[1], role="node", agent="bench")))
    await ws.receive()
    return ws


async def registered_publisher(
    http: aiohttp.ClientSession, url: str, keys: EpochKeys
) -> aiohttp.ClientWebSocketResponse:
    """A handshaken connection that has registered the topic of ``keys``."""
    ws = await handshake(http, url)
    relay_key = keys.relay_key.public
    proof = registration_proof(keys)
    await ws.send_bytes(encode_frame(Register(topic=keys.topic, relay_key=relay_key, proof=proof)))
    return ws


async def ingest_and_propagation(
    url: str, count: int, idle: int, relay_pid: int
) -> dict[str, object]:
    keys = EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
    bundles = make_bundles(keys, SigningKey.generate(), count + 200)
    result: dict[str, object] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        publisher = await registered_publisher(http, url, keys)
        started, window, acked, sent = time.perf_counter(), 64, 0, 0
        while acked < count:
            while sent < count and sent - acked < window:
                await publisher.send_bytes(encode_frame(Publish(envelope=bundles[sent])))
                sent += 1
            message = await publisher.receive()
            if decode_frame(message.data).TYPE == "ack":
                acked += 1
        elapsed = time.perf_counter() - started
        result["ingest_bundles_per_s"] = round(count / elapsed, 1)

        before = rss_kib(relay_pid)
        idlers = [await handshake(http, url) for _ in range(idle)]
        await asyncio.sleep(1)
        after = rss_kib(relay_pid)
        result["idle_connections"] = idle
        result["memory_per_idle_connection_kib"] = round((after - before) / max(idle, 1), 2)
        result["bare_aiohttp_memory_per_idle_connection_kib"] = await bare_idle_memory(idle)

        subscriber = await handshake(http, url)
        await subscriber.send_bytes(encode_frame(Subscribe(topic=keys.topic, after=10**12)))
        await subscriber.receive()  # caught_up
        samples = []
        for envelope in bundles[count : count + 200]:
            t0 = time.perf_counter()
            await publisher.send_bytes(encode_frame(Publish(envelope=envelope)))
            while True:
                frame = decode_frame((await subscriber.receive()).data)
                if frame.TYPE == "deliver":
                    break
            samples.append(time.perf_counter() - t0)
            await publisher.receive()  # its ack
        result["propagation_ms"] = {
            "p50": round(statistics.median(samples) * 1000, 3),
            "p99": round(percentile(samples, 0.99) * 1000, 3),
            "with_idle_connections": idle,
        }
        for ws in [*idlers, subscriber, publisher]:
            await ws.close()
    return result


async def bare_idle_memory(idle: int) -> float:
    """KiB of the bare server's memory per idle connection, ``idle`` of them."""
    bare, url = start_bare()
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            before = rss_kib(bare.pid)
            idlers = [await http.ws_connect(url) for _ in range(idle)]
            await asyncio.sleep(1)
            after = rss_kib(bare.pid)
            for ws in idlers:
                await ws.close()
    finally:
        bare.terminate()
        bare.wait()
    return round((after - before) / max(idle, 1), 2)


def wire_overhead() -> dict[str, object]:
    doc = LedgerDoc.genesis(b"s", ("resources",), os.urandom(16))
    with doc.edit() as w:
        w.put("resources", "r" * 32, {"name": "Ladder", "note": ""})
    with doc.edit() as w:
        w.put("resources", "r" * 32, {"note": "left rung wobbles"})
    change = doc.last_edit.changes[0]
    keys = EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
    device = SigningKey.generate()
    inner = Inner(
        kind="content",
        group_id=keys.group_id,
        epoch_id=keys.epoch_id,
        author=device.public,
        seq=2,
        prev=os.urandom(32),
        auth_heads=(),
        created_at=1,
        payload=encode_changes([("live", change, [("resources", "r" * 32)])]),
    )
    envelope = seal_bundle(inner, keys=keys, device=device, salt=os.urandom(32)).encode()
    frame = encode_frame(Publish(envelope=envelope))
    return {
        "raw_change_bytes": len(change),
        "envelope_bytes": len(envelope),
        "frame_bytes": len(frame),
        "ratio": round(len(frame) / len(change), 2),
    }


def relay_bytes_out(url: str) -> int:
    """What the relay has sent so far, from its /metrics."""

    async def read() -> str:
        metrics = url.replace("ws://", "http://") + "/metrics"
        async with aiohttp.ClientSession() as http, http.get(metrics) as response:
            return await response.text()

    for line in asyncio.run(read()).splitlines():
        if line.startswith("hearth_relay_bytes_out_total"):
            return int(float(line.split()[-1]))
    raise AssertionError("the relay's metrics have no hearth_relay_bytes_out_total")


def catch_up(entries: int, url: str, root: Path) -> dict[str, object]:
    """A fresh device catching up a ledger of ``entries`` entries; the saved document is
    left in ``root / "ledger.automerge"`` (for bench/repo_server_bench.py)."""
    create_identity(root / "writer", name="Writer")
    with open_node(root / "writer", durable=False) as writer:
        writer.create_group("Bench")
        with writer.change() as ledger:
            ledger.add_relay(url)
        for i in range(entries):
            with writer.change() as ledger:
                ledger.add_resource(f"Resource {i:05d}", quantity=Decimal(1))
        group = writer.current_group().id
        token = writer.create_invite()
        report = asyncio.run(sync_relay(writer, url, [group], timeout=600))
        assert report.ok, report.error
        saved = writer.ledger().doc.save()
    (root / "ledger.automerge").write_bytes(saved)
    # The floor: load the same document and decrypt as many bytes.
    key = os.urandom(32)
    sealed = aead_seal(key, saved, b"")
    t0 = time.perf_counter()
    loaded = LedgerDoc.load(aead_open(key, sealed, b"") or b"", os.urandom(16))
    floor = time.perf_counter() - t0
    # What no catch-up that leaves the ledger readable can go below: the floor, then one
    # read of every table through the binding (AUTOMERGE.md: its fastest full read).
    t0 = time.perf_counter()
    for table in loaded.tables():
        loaded.read_table(table)
    readable_floor = floor + time.perf_counter() - t0
    create_identity(root / "fresh", name="Fresh")
    with open_node(root / "fresh") as fresh:
        fresh.join_with_token(token)
        sent_before = relay_bytes_out(url)
        t0 = time.perf_counter()
        report = asyncio.run(sync_relay(fresh, url, [group], timeout=3600))
        elapsed = time.perf_counter() - t0
        wire = relay_bytes_out(url) - sent_before
        assert report.ok, report.error
        assert len(fresh.view().resources()) == entries
    return {
        "entries": entries,
        "bundles": report.received,
        "catch_up_s": round(elapsed, 3),
        "floor_s": round(floor, 4),
        "ratio_to_floor": round(elapsed / floor, 1),
        "floor_then_read_every_table_s": round(readable_floor, 4),
        "lowest_possible_ratio_to_floor": round(readable_floor / floor, 2),
        "saved_document_bytes": len(saved),
        "wire_bytes": wire,
        "wire_to_saved": round(wire / len(saved), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--ingest", type=int, default=3000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument(
        "--catch-up-only", action="store_true", help="measure only the fresh device's catch-up"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hearth-sync-bench-"))
    config = root / "relay.toml"
    config.write_text(
        "[relay]\nmax_connections_per_ip = 5000\nmax_connections = 6000\n"
        "publish_burst = 100000\npublish_per_s = 100000.0\n"
    )
    relay, url = start_relay(root / "relay", config)
    try:
        result: dict[str, object] = {
            "benchmark": "sync",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count()},
        }
        if not args.catch_up_only:
            result["wire_overhead"] = wire_overhead()
            result.update(
                asyncio.run(ingest_and_propagation(url, args.ingest, args.idle, relay.pid))
            )
        result["catch_up"] = catch_up(args.entries, url, root)
    finally:
        relay.terminate()
        relay.wait()
    save_result("sync", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
