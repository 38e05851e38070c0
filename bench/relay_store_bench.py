"""The relay on its two stores, same workload, same run; writes a JSON result to bench/results/.

    python bench/relay_store_bench.py [--bundles 4000] [--topics 4] [--idle 1000,5000]

Three set-ups, each a fresh store, all on 127.0.0.1 with a durable PostgreSQL server of
this machine's (Debian's) started for the run:
- one ``hearth-relay`` process on SQLite;
- one process on PostgreSQL;
- two processes on one PostgreSQL database, publishers on one and subscribers on the
  other, so every delivery crosses processes.

The workload: ``--topics`` publishers, one topic each, sending ``--bundles`` bundles in all
with 32 unacknowledged at a time, and one subscriber per topic. Measured: bundles per
second acknowledged durably, and p50/p99 of publish → ack (the write) and publish →
delivery at the subscriber. Then the relay's resident memory with 1,000 and 5,000 idle,
handshaken connections, on each store.

The clients, the relays and PostgreSQL share this machine's cores: read the figures side
by side, not as what one relay does on a server of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

import aiohttp
from sync_bench import (
    handshake,
    make_bundles,
    percentile,
    registered_publisher,
    rss_kib,
    save_result,
    start_relay,
)

from hearth.crypto import SigningKey
from hearth.protocol.bundle import EpochKeys
from hearth.protocol.frames import Publish, Subscribe, decode_frame, encode_frame
from tests import postgres

# Limits lifted so that the store, not the per-connection rate limit, is what is measured.
SETTINGS = """
[relay]
publish_per_s = 1000000.0
publish_burst = 1000000
max_connections = 6000
max_connections_per_ip = 6000
"""
WINDOW = 32


async def workload(
    publish_to: list[str], subscribe_to: list[str], bundles: int, topics: int
) -> dict[str, object]:
    """Publishers on ``publish_to`` and subscribers on ``subscribe_to`` (taken in turn)."""
    groups = [
        EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
        for _ in range(topics)
    ]
    per_topic = bundles // topics
    sealed = [make_bundles(keys, SigningKey.generate(), per_topic) for keys in groups]
    sent_at: dict[bytes, float] = {}
    ack_s: list[float] = []
    deliver_s: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        publishers = [
            await registered_publisher(http, publish_to[i % len(publish_to)], keys)
            for i, keys in enumerate(groups)
        ]
        subscribers = []
        for i, keys in enumerate(groups):
            ws = await handshake(http, subscribe_to[i % len(subscribe_to)])
            await ws.send_bytes(encode_frame(Subscribe(topic=keys.topic, after=0)))
            await ws.receive()  # caught_up: nothing yet
            subscribers.append(ws)

        async def publish(ws: aiohttp.ClientWebSocketResponse, envelopes: list[bytes]) -> None:
            sent = acked = 0
            while acked < len(envelopes):
                while sent < len(envelopes) and sent - acked < WINDOW:
                    sent_at[envelopes[sent][-32:]] = time.perf_counter()
                    await ws.send_bytes(encode_frame(Publish(envelope=envelopes[sent])))
                    sent += 1
                frame = decode_frame((await ws.receive()).data)
                if frame.TYPE == "ack":
                    ack_s.append(time.perf_counter() - sent_at[envelopes[acked][-32:]])
                    acked += 1

        async def receive(ws: aiohttp.ClientWebSocketResponse, count: int) -> None:
            got = 0
            while got < count:
                frame = decode_frame((await ws.receive()).data)
                if frame.TYPE == "deliver":
                    envelope = frame.envelope  # type: ignore[attr-defined]
                    deliver_s.append(time.perf_counter() - sent_at[envelope[-32:]])
                    got += 1

        started = time.perf_counter()
        await asyncio.gather(
            *(publish(ws, envelopes) for ws, envelopes in zip(publishers, sealed, strict=True)),
            *(receive(ws, per_topic) for ws in subscribers),
        )
        elapsed = time.perf_counter() - started
        for ws in publishers + subscribers:
            await ws.close()
    return {
        "bundles": per_topic * topics,
        "bundles_per_s": round(per_topic * topics / elapsed, 1),
        "publish_to_ack_ms": {
            "p50": round(percentile(ack_s, 0.5) * 1000, 2),
            "p99": round(percentile(ack_s, 0.99) * 1000, 2),
        },
        "publish_to_delivery_ms": {
            "p50": round(percentile(deliver_s, 0.5) * 1000, 2),
            "p99": round(percentile(deliver_s, 0.99) * 1000, 2),
        },
    }


async def idle_memory(url: str, pid: int, counts: list[int]) -> dict[str, int]:
    """The relay's resident memory (KiB) with no connections and then with each count."""
    memory = {"0": rss_kib(pid)}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        idle: list[aiohttp.ClientWebSocketResponse] = []
        for count in sorted(counts):
            while len(idle) < count:
                idle += await asyncio.gather(*(handshake(http, url) for _ in range(100)))
            await asyncio.sleep(1.5)
            memory[str(count)] = rss_kib(pid)
        await asyncio.gather(*(ws.close() for ws in idle))
    return memory


def run(args: argparse.Namespace, root: Path, server: str) -> dict[str, object]:
    config = root / "relay.toml"
    config.write_text(SETTINGS)
    counts = [int(n) for n in args.idle.split(",")]
    result: dict[str, object] = {}
    setups = {
        "sqlite_one_process": [[]],
        "postgresql_one_process": [["--database", postgres.fresh_database(server)]],
    }
    shared = postgres.fresh_database(server)
    setups["postgresql_two_processes"] = [["--database", shared], ["--database", shared]]
    for name, processes in setups.items():
        relays = [
            start_relay(root / f"{name}-{i}", config, *extra) for i, extra in enumerate(processes)
        ]
        try:
            urls = [url for _, url in relays]
            figures = asyncio.run(workload(urls[:1], urls[-1:], args.bundles, args.topics))
            if len(relays) == 1:
                figures["memory_kib_by_idle_connections"] = asyncio.run(
                    idle_memory(urls[0], relays[0][0].pid, counts)
                )
            result[name] = figures
            print(name, figures, flush=True)
        finally:
            for proc, _ in relays:
                proc.terminate()
                proc.wait(timeout=15)
                assert proc.stdout is not None
                proc.stdout.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=4000)
    parser.add_argument("--topics", type=int, default=4)
    parser.add_argument("--idle", default="1000,5000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pg_dir = Path(tempfile.mkdtemp(prefix="hearth-bench-pg-"))
        pg_dir.chmod(0o755)
        server = postgres.start(pg_dir / "server", durable=True)
        try:
            result = run(args, root, server)
        finally:
            postgres.stop(pg_dir / "server")
            shutil.rmtree(pg_dir, ignore_errors=True)
    result["workload"] = {"bundles": args.bundles, "topics": args.topics, "window": WINDOW}
    result["cpu_count"] = os.cpu_count()
    save_result("relay-stores", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
