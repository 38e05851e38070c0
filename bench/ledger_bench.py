"""Ledger benchmarks of the ledger issue; writes a JSON result to bench/results/.

    python bench/ledger_bench.py [--resources 10000] [--events 10000]

Measures, on one node with a real store in a temporary home:
- adding N resources then N events through the library, one durable command each
  (time and store size);
- `hearth resource list --json` as a whole process (target < 1 s) and the in-process query
  (target < 50 ms);
- applying one remote change to the ledger and refreshing the view (target < 5 ms);
- opening the node to read (target < 1 s), and with its Automerge document to write.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sync_bench import save_result

from hearth.ledger import Ledger, LedgerDoc
from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.testing import FakeClock, seeded_ids


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
        "n": len(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    result: dict[str, object] = {
        "benchmark": "ledger",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "resources": args.resources,
        "events": args.events,
    }
    home = Path(tempfile.mkdtemp(prefix="hearth-bench-")) / "node"
    create_identity(home, name="Bench")
    with open_node(home) as node:
        node.create_group("Benchmark group")
        start = time.perf_counter()
        ids = []
        for i in range(args.resources):
            with node.change() as ledger:
                ids.append(ledger.add_resource(f"Resource {i:05d}", quantity=Decimal(0)).id)
        add_resources = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(args.events):
            with node.change() as ledger:
                ledger.produce(ids[i % len(ids)], Decimal(1 + i % 5))
        add_events = time.perf_counter() - start
    store = home / "hearth.db"
    size = sum(p.stat().st_size for p in home.glob("hearth.db*"))
    result["add_resources_s"] = round(add_resources, 2)
    result["add_resources_per_s"] = round(args.resources / add_resources, 1)
    result["add_events_s"] = round(add_events, 2)
    result["add_events_per_s"] = round(args.events / add_events, 1)
    result["store_bytes"] = size

    def open_and_read() -> None:
        with open_node(home) as node:
            node.view()

    def open_for_writing() -> None:
        with open_node(home) as node:
            node.ledger()

    result["open_node"] = summary(timed(open_and_read, 5)) | {"target_ms": 1000}
    result["open_node_with_document"] = summary(timed(open_for_writing, 5))

    with open_node(home) as node:
        ledger = node.ledger()
        result["resource_list_query"] = summary(
            timed(lambda: [ledger.view.resource(r.id) for r in ledger.view.resources()], 20)
        ) | {"target_ms": 50}

        # A remote device's change: made on a copy of the document under another actor.
        doc = ledger.doc
        remote = Ledger(
            LedgerDoc.load(doc.save(), b"\x42" * 16),
            author=ledger.author,
            clock=FakeClock(now=2_000_000_000_000, step=1),
            new_id=seeded_ids(1),
        )
        samples = []
        for i in range(50):
            remote.produce(ids[i], Decimal(1))
            _, edit = remote.take_outbox()[-1]
            start = time.perf_counter()
            ledger.apply_remote(list(edit.changes), sorted(edit.touched))
            ledger.view.resource(ids[i])
            samples.append(time.perf_counter() - start)
        assert ledger.view.resource(ids[0]).quantity == remote.view.resource(ids[0]).quantity
        result["apply_remote_change"] = summary(samples) | {"target_ms": 5}

    hearth = Path(sys.executable).parent / "hearth"
    command = [
        str(hearth) if hearth.exists() else "hearth",
        "--home",
        str(home),
        "resource",
        "list",
        "--json",
    ]

    # As an installed package runs: with compiled bytecode (some shells forbid writing it,
    # which would time Python compiling Hearth's sources instead).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def whole_process() -> None:
        out = subprocess.run(command, capture_output=True, check=True, env=env).stdout
        assert len(json.loads(out)) == args.resources

    whole_process()  # compile once

    result["resource_list_process"] = summary(timed(whole_process, 5)) | {"target_ms": 1000}
    path = save_result("ledger", result)
    print(f"written to {path}; store at {store}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
