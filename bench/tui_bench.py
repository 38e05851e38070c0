"""The app with a large ledger; writes a JSON result to bench/results/.

    python bench/tui_bench.py [--entries 10000]

A node gets ``--entries`` resources; then, headless at 110×34 with Textual's pilot:
- first paint: from starting the app until the first screen is drawn (target < 1 s);
- a key press in the resources table (the cursor moving down, then a sort that refills
  the table) until the screen is updated (target < 100 ms);
- a change stored by another process on the same home (as sharing stores one) until its
  row shows in the table (target < 200 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from textual.widgets import DataTable

sys.path.insert(0, str(Path(__file__).parent))

from sync_bench import save_result

from hearth.identity import create_identity
from hearth.node import open_node
from tui.app import HearthApp


def build(home: Path, entries: int) -> float:
    create_identity(home, name="Bench")
    t0 = time.perf_counter()
    with open_node(home, durable=False) as node:
        node.create_group("Bench")
        for start in range(0, entries, 500):
            with node.change() as ledger:  # in batches: building is not what is measured
                for i in range(start, min(start + 500, entries)):
                    ledger.add_resource(f"Resource {i:05d}", quantity=Decimal(1))
    return time.perf_counter() - t0


async def measure(home: Path) -> dict[str, object]:
    with open_node(home) as node:
        app = HearthApp(node, share=False)  # the default poll, as a member runs it
        t0 = time.perf_counter()
        async with app.run_test(size=(110, 34)) as pilot:
            await pilot.pause()
            first_paint = time.perf_counter() - t0
            await pilot.press("2")
            await pilot.pause()
            table = app.query_one("#resource-table", DataTable)
            table.focus()
            moves = []
            for _ in range(20):
                t = time.perf_counter()
                await pilot.press("down")
                await pilot.pause()
                moves.append(time.perf_counter() - t)
            t = time.perf_counter()
            await pilot.press("s")  # sort by kind: the whole table is refilled
            await pilot.pause()
            resort = time.perf_counter() - t
            arrivals = []
            for n in range(5):
                with open_node(home) as other, other.change() as ledger:
                    ledger.add_resource(f"Arrived {n}")
                t = time.perf_counter()
                while table.row_count <= 0 or not any(
                    str(table.get_row_at(i)[1]) == f"Arrived {n}" for i in range(table.row_count)
                ):
                    await pilot.pause(0.005)
                    if time.perf_counter() - t > 10:
                        raise TimeoutError("the change never showed")
                arrivals.append(time.perf_counter() - t)
    return {
        "first_paint_ms": round(first_paint * 1000),
        "cursor_move_ms_p50": round(statistics.median(moves) * 1000, 1),
        "cursor_move_ms_max": round(max(moves) * 1000, 1),
        "sort_refill_ms": round(resort * 1000),
        "remote_change_to_row_ms": [round(a * 1000) for a in arrivals],
        "targets": {"first_paint_ms": 1000, "key_press_ms": 100, "remote_change_ms": 200},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hearth-tui-bench-")) / "home"
    built = build(home, args.entries)
    result = {
        "benchmark": "tui",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "entries": args.entries,
        "build_s": round(built, 1),
        **asyncio.run(measure(home)),
    }
    save_result("tui", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
