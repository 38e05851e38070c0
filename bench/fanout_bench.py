"""Relay fan-out cost: CPU per delivered bundle, against a bare aiohttp fan-out server.

    python bench/fanout_bench.py [--subscribers 50] [--few 10] [--bundles 400] [--rounds 3]

Both servers run as their own processes on 127.0.0.1 and are given the same work: one
publisher sends ``--bundles`` bundles, each delivered to ``--subscribers`` subscribers.
The figure is the server process's CPU time (user + system, from /proc) divided by the
deliveries. The bare server checks nothing and stores nothing; the relay parses, checks
the admission signature, stores durably (group commit) and fans out. Both answer the
publisher after each bundle (the bare one with a bare "ack"), and the publisher waits for
that answer before the next, like a node editing live. Runs at ``--few`` subscribers too
give what one more subscriber costs, apart from the cost of taking each bundle in.

It also measures, in its own process, the two things SECURITY.md requires of the relay for
each bundle — checking the admission signature (R11) and committing it durably before the
ack (SQLite WAL, ``synchronous=FULL``, the relay's own store) — and reports the ratio a
relay would reach if those were all it did beyond the bare server: the lowest possible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from hearth.crypto import SigningKey
from hearth.protocol.bundle import EpochKeys, parse_envelope, registration_proof
from hearth.protocol.frames import Publish, Subscribe, decode_frame, encode_frame
from relay.sqlite_store import SqliteStore

sys.path.insert(0, str(Path(__file__).parent))
from sync_bench import handshake, make_bundles, registered_publisher, start_bare, start_relay

RESULTS = Path(__file__).parent / "results"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_load(
    url: str, bundles: list[bytes], subscribers: int, relay: bool, keys: EpochKeys, pid: int
) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        if relay:
            publisher = await registered_publisher(http, url, keys)
            subs = [await handshake(http, url) for _ in range(subscribers)]
            for ws in subs:
                await ws.send_bytes(encode_frame(Subscribe(topic=keys.topic, after=0)))
                await ws.receive()  # caught_up
        else:
            publisher = await http.ws_connect(url, max_msg_size=2 * 1024 * 1024)
            subs = [
                await http.ws_connect(url, max_msg_size=2 * 1024 * 1024) for _ in range(subscribers)
            ]
        await asyncio.sleep(0.5)

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
            got = 0
            while got < len(bundles):
                message = await ws.receive()
                if not relay or decode_frame(message.data).TYPE == "deliver":
                    got += 1

        readers = [asyncio.create_task(drain(ws)) for ws in subs]
        before = cpu_seconds(pid)
        for envelope in bundles:
            await publisher.send_bytes(
                encode_frame(Publish(envelope=envelope)) if relay else envelope
            )
            await publisher.receive()  # the ack: one at a time, like a node editing live
        await asyncio.gather(*readers)
        used = cpu_seconds(pid) - before
        for ws in [publisher, *subs]:
            await ws.close()
    return used


def required_us_per_bundle(bundles: list[bytes], keys: EpochKeys) -> dict[str, float]:
    """CPU microseconds per bundle for the signature check and the durable commit alone."""
    envelopes = [parse_envelope(b) for b in bundles]
    started = time.process_time()
    for envelope in envelopes:
        assert envelope.relay_signature_valid(keys.relay_key.public)
    verify = time.process_time() - started
    with tempfile.TemporaryDirectory() as data:
        store = SqliteStore(Path(data) / "relay.db")
        store.register(keys.topic, keys.relay_key.public, registration_proof(keys))
        store.commit()
        started = time.process_time()
        for envelope, data_bytes in zip(envelopes, bundles, strict=True):
            store.add(envelope.topic, envelope.id, data_bytes)
            store.commit()  # one at a time, as the publisher waits for each ack
        durable = time.process_time() - started
        store.close()
    return {
        "signature_check_us": round(verify / len(bundles) * 1e6, 1),
        "durable_commit_us": round(durable / len(bundles) * 1e6, 1),
    }


def relay_cpu(root: Path, bundles: list[bytes], subscribers: int, keys: EpochKeys) -> float:
    """CPU seconds a fresh relay spends fanning ``bundles`` out to ``subscribers``."""
    data = Path(tempfile.mkdtemp(dir=root))
    relay, url = start_relay(data / "relay", root / "relay.toml")
    try:
        return asyncio.run(run_load(url, bundles, subscribers, True, keys, relay.pid))
    finally:
        relay.terminate()
        relay.wait()


def bare_cpu(bundles: list[bytes], subscribers: int, keys: EpochKeys) -> float:
    """CPU seconds the bare aiohttp server spends on the same load."""
    bare, url = start_bare()
    try:
        return asyncio.run(run_load(url, bundles, subscribers, False, keys, bare.pid))
    finally:
        bare.terminate()
        bare.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--few", type=int, default=10, help="subscribers for the marginal cost")
    parser.add_argument("--bundles", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; medians reported")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hearth-fanout-"))
    (root / "relay.toml").write_text(
        "[relay]\nmax_connections_per_ip = 5000\npublish_burst = 100000\npublish_per_s = 100000.0\n"
    )
    keys = EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
    bundles = make_bundles(keys, SigningKey.generate(), args.bundles)
    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):  # interleaved, so a slow spell of the machine hits both
        for subscribers in (args.few, args.subscribers):
            runs.setdefault(("relay", subscribers), []).append(
                relay_cpu(root, bundles, subscribers, keys)
            )
            runs.setdefault(("bare", subscribers), []).append(bare_cpu(bundles, subscribers, keys))
    result: dict[str, object] = {
        "benchmark": "fanout",
        "subscribers": args.subscribers,
        "bundles": args.bundles,
        "rounds": args.rounds,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for server in ("relay", "bare"):
        many = statistics.median(runs[(server, args.subscribers)])
        few = statistics.median(runs[(server, args.few)])
        name = "bare_aiohttp" if server == "bare" else server
        # All the CPU over all deliveries, the figure the issue names ...
        result[f"{name}_us_per_delivery"] = round(many / (args.bundles * args.subscribers) * 1e6, 2)
        # ... and what one more subscriber adds, which leaves out the cost of taking each
        # bundle in (for the relay: parsing, the signature check, the durable write).
        marginal = (many - few) / (args.bundles * (args.subscribers - args.few))
        result[f"{name}_us_per_extra_delivery"] = round(marginal * 1e6, 2)
        result[f"{name}_us_per_bundle_taken_in"] = round(
            (few - marginal * args.bundles * args.few) / args.bundles * 1e6, 1
        )
    required = required_us_per_bundle(bundles, keys)
    result["required_per_bundle"] = required
    bare_per_delivery = float(result["bare_aiohttp_us_per_delivery"])  # type: ignore[arg-type]
    floor = bare_per_delivery + sum(required.values()) / args.subscribers
    result["lowest_possible_ratio_us_per_delivery"] = round(floor / bare_per_delivery, 2)
    for figure in ("us_per_delivery", "us_per_extra_delivery"):
        relay, bare = result[f"relay_{figure}"], result[f"bare_aiohttp_{figure}"]
        result[f"ratio_{figure}"] = round(float(relay) / max(float(bare), 1e-9), 2)  # type: ignore[arg-type]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fanout-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
