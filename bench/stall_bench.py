"""Event-loop stall while a node catches up after a week offline; writes bench/results/.

    python bench/stall_bench.py [--changes 10000]

A writer node makes ``--changes`` edits (one bundle each) and uploads them to a real
``hearth-relay`` on 127.0.0.1. Another member's node, which joined before and was away
since, then syncs them all — in the event loop a TUI would share — while a ticker task
measures how long the loop is held between its wake-ups. Target: the longest pause
< 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sync_bench import percentile, save_result, start_relay

from hearth.net.compaction import compact_in_background
from hearth.net.sync_client import sync_relay
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node

TICK_S = 0.005


async def sync_while_ticking(node: Node, url: str, group: str) -> dict[str, object]:
    """Sync with the relay; meanwhile note every gap between the ticker's wake-ups."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            gaps.append(now - last - TICK_S)
            last = now

    ticking = asyncio.create_task(ticker())
    compacting = asyncio.create_task(compact_in_background(node))  # as the app does
    t0 = time.perf_counter()
    report = await sync_relay(node, url, [group], timeout=3600)
    elapsed = time.perf_counter() - t0
    done.set()
    await ticking
    compacting.cancel()
    assert report.ok, report.error
    return {
        "bundles_received": report.received,
        "applied": report.applied,
        "sync_s": round(elapsed, 2),
        "longest_pause_ms": round(max(gaps) * 1000, 1),
        "pause_p99_ms": round(percentile(gaps, 0.99) * 1000, 2),
        "pause_p50_ms": round(percentile(gaps, 0.50) * 1000, 2),
        "target_longest_pause_ms": 100,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hearth-stall-bench-"))
    config = root / "relay.toml"
    config.write_text("[relay]\npublish_burst = 100000\npublish_per_s = 100000.0\n")
    relay, url = start_relay(root / "relay", config)
    try:
        create_identity(root / "writer", name="Writer")
        create_identity(root / "away", name="Away")
        with open_node(root / "writer", durable=False) as writer, open_node(root / "away") as away:
            group = writer.create_group("Bench").id
            with writer.change() as ledger:
                ledger.add_relay(url)
            away.join_with_token(writer.create_invite())
            assert asyncio.run(sync_relay(writer, url, [group], timeout=60)).ok
            assert asyncio.run(sync_relay(away, url, [group], timeout=60)).ok
            t0 = time.perf_counter()
            for i in range(args.changes):
                with writer.change() as ledger:
                    ledger.add_resource(f"Resource {i:05d}", quantity=Decimal(1))
            made = time.perf_counter() - t0
            assert asyncio.run(sync_relay(writer, url, [group], timeout=3600)).ok
            stall = asyncio.run(sync_while_ticking(away, url, group))
            assert len(away.view().resources()) == args.changes
    finally:
        relay.terminate()
        relay.wait()
    result = {
        "benchmark": "stall",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "changes": args.changes,
        "writer_edits_s": round(made, 1),
        **stall,
    }
    save_result("stall", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
