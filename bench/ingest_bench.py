"""Relay ingest beside nostr-relay, in one run; writes a JSON result to bench/results/.

    python bench/ingest_bench.py [--count 5000] [--rounds 3] [--nostr-venv DIR]

Durably accepted items per second, each relay taking the same job from one publisher that
keeps 64 unacknowledged at a time on 127.0.0.1:

- ``hearth-relay`` (SQLite): signed bundles published to a registered topic, each checked
  (the relay-admission Ed25519 signature), stored and acknowledged after the write is
  durable.
- PyPI ``nostr-relay`` 1.14 (its default SQLite storage, under uvicorn): signed kind-1
  events, each checked (its Schnorr signature) and stored before its ``OK``.

Rounds alternate between the two so that a busy moment of the machine falls on both. The
issue's target: hearth-relay at least 10x nostr-relay. nostr-relay and its client (which
signs with coincurve) run in a virtualenv of their own (``--nostr-venv``; made with pip on
first use, under bench/.nostr-venv by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

import aiohttp
from sync_bench import make_bundles, registered_publisher, save_result, start_relay

from hearth.crypto import SigningKey
from hearth.protocol.bundle import EpochKeys
from hearth.protocol.frames import Publish, decode_frame, encode_frame

WINDOW = 64
NOSTR_RELAY = "nostr-relay==1.14"

# Run by the nostr venv's Python: sign COUNT events, publish them WINDOW at a time, print
# how many were accepted per second.
_NOSTR_CLIENT = textwrap.dedent(
    """
    import asyncio, hashlib, json, os, sys, time
    import aiohttp, coincurve

    url, count, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    key = coincurve.PrivateKey(os.urandom(32))
    pubkey = key.public_key_xonly.format().hex()
    now = int(time.time())
    events = []
    for i in range(count):
        content = f"bench note {i} " + os.urandom(8).hex()
        body = [0, pubkey, now, 1, [], content]
        eid = hashlib.sha256(
            json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        ).digest()
        events.append(json.dumps(["EVENT", {
            "id": eid.hex(), "pubkey": pubkey, "created_at": now, "kind": 1, "tags": [],
            "content": content, "sig": key.sign_schnorr(eid, None).hex(),
        }]))

    async def run():
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url) as ws:
                sent = accepted = answered = 0
                started = time.perf_counter()
                while answered < count:
                    while sent < count and sent - answered < window:
                        await ws.send_str(events[sent])
                        sent += 1
                    message = json.loads((await ws.receive()).data)
                    if message[0] == "OK":
                        answered += 1
                        accepted += bool(message[2])
                elapsed = time.perf_counter() - started
        print(json.dumps({"accepted": accepted, "per_s": accepted / elapsed}))

    asyncio.run(run())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nostr_python(venv: Path) -> Path:
    """The nostr venv's Python, made with nostr-relay in it if missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", NOSTR_RELAY, "aiohttp"], check=True
        )
    return python


def start_nostr(python: Path, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nostr-relay on a free loopback port, its SQLite database under ``root``."""
    port = free_port()
    config = root / "nostr.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            DEBUG: false
            storage:
              sqlalchemy.url: sqlite+aiosqlite:///{root / "nostr.sqlite3"}
            gunicorn:
              bind: 127.0.0.1:{port}
              workers: 1
            """
        )
    )
    relay = subprocess.Popen(
        [str(python.parent / "nostr-relay"), "-c", str(config), "serve", "--use-uvicorn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return relay, f"ws://127.0.0.1:{port}/"
        time.sleep(0.1)
    relay.kill()
    raise RuntimeError("nostr-relay did not start")


def nostr_round(python: Path, url: str, count: int) -> float:
    out = subprocess.run(
        [str(python), "-c", _NOSTR_CLIENT, url, str(count), str(WINDOW)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["accepted"] != count:
        raise RuntimeError(f"nostr-relay accepted {result['accepted']} of {count}")
    return float(result["per_s"])


async def hearth_round(url: str, count: int) -> float:
    keys = EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
    bundles = make_bundles(keys, SigningKey.generate(), count)
    async with aiohttp.ClientSession() as http:
        publisher = await registered_publisher(http, url, keys)
        started, acked, sent = time.perf_counter(), 0, 0
        while acked < count:
            while sent < count and sent - acked < WINDOW:
                await publisher.send_bytes(encode_frame(Publish(envelope=bundles[sent])))
                sent += 1
            frame = decode_frame((await publisher.receive()).data)
            if frame.TYPE != "ack":
                raise RuntimeError(f"hearth-relay answered {frame.TYPE}")
            acked += 1
        elapsed = time.perf_counter() - started
        await publisher.close()
    return count / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nostr-venv", type=Path, default=Path(__file__).parent / ".nostr-venv")
    args = parser.parse_args()
    python = nostr_python(args.nostr_venv)
    root = Path(tempfile.mkdtemp(prefix="hearth-ingest-bench-"))
    (root / "nostr").mkdir()
    config = root / "relay.toml"
    config.write_text("[relay]\npublish_burst = 1000000\npublish_per_s = 1000000.0\n")
    relay, url = start_relay(root / "hearth", config)
    nostr, nostr_url = start_nostr(python, root / "nostr")
    hearth_rates: list[float] = []
    nostr_rates: list[float] = []
    try:
        for _ in range(args.rounds):
            hearth_rates.append(asyncio.run(hearth_round(url, args.count)))
            nostr_rates.append(nostr_round(python, nostr_url, args.count))
    finally:
        for proc in (relay, nostr):
            proc.terminate()
            proc.wait()
    hearth = statistics.median(hearth_rates)
    other = statistics.median(nostr_rates)
    save_result(
        "ingest",
        {
            "benchmark": "ingest",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count()},
            "count": args.count,
            "window": WINDOW,
            "hearth_relay_per_s": [round(r) for r in hearth_rates],
            "nostr_relay_per_s": [round(r) for r in nostr_rates],
            "median_hearth_per_s": round(hearth),
            "median_nostr_per_s": round(other),
            "ratio": round(hearth / other, 1),
            "target_ratio": 10,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
