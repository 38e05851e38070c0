"""The app with a large ledger; writes a JSON result to bench/results/.

    python bench/tui_bench.py [--entries 10000]

A node gets ``--entries`` resources; then, headless at 110×34 with Textual's pilot:
- first paint: from starting the app until it hands its first frame to the terminal
  (target < 1 s);
- a key press in the resources table (the cursor moving down, then a sort that refills
  the table) until the app hands the updated frame to the terminal (target < 100 ms);
- a remote change until the first frame with its row in the table (target < 200 ms): a
  bundle from another member applied by the app's own sharing (as it receives one), and a
  change stored by another ``hearth`` process on the same home (noticed by polling).
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

from rich.console import RenderableType
from textual.screen import Screen
from textual.widgets import DataTable

sys.path.insert(0, str(Path(__file__).parent))

from sync_bench import save_result

from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.validity.intake import take_in
from tui.app import HearthApp


def build(home: Path, other: Path, entries: int) -> float:
    create_identity(home, name="Bench")
    create_identity(other, name="Other")
    t0 = time.perf_counter()
    with open_node(home, durable=False) as node:
        node.create_group("Bench")
        with open_node(other, durable=False) as member:
            member.join_with_token(node.create_invite())
            for bundle in member.feeds.all():
                take_in(node, bundle.envelope, source="bench")
        for start in range(0, entries, 500):
            with node.change() as ledger:  # in batches: building is not what is measured
                for i in range(start, min(start + 500, entries)):
                    ledger.add_resource(f"Resource {i:05d}", quantity=Decimal(1))
    return time.perf_counter() - t0


async def until_shown(table: DataTable[str], key: str, frames: list[float], t: float) -> float:
    """Seconds from ``t`` until the first frame drawn with the row of entry ``key`` in the
    table (looked up by key: scanning 10,000 rows would itself hold up the app)."""
    while key not in table.rows:
        await asyncio.sleep(0.001)
        if time.perf_counter() - t > 10:
            raise TimeoutError("the change never showed")
    there = time.perf_counter()
    while not any(f > there for f in frames):
        await asyncio.sleep(0.001)
        if time.perf_counter() - there > 10:
            raise TimeoutError("no frame was drawn")
    return next(f for f in frames if f > there) - t


def painted_frames(app: HearthApp) -> list[float]:
    """The times at which the app hands a rendered frame to its terminal, from now on:
    a key press counts until the first frame after it."""
    frames: list[float] = []
    display = app._display

    def noted(screen: Screen, renderable: RenderableType | None) -> None:
        if renderable is not None:
            frames.append(time.perf_counter())
        display(screen, renderable)

    app._display = noted  # type: ignore[method-assign]
    return frames


async def measure(home: Path, other: Path) -> dict[str, object]:
    with open_node(home) as node, open_node(other) as member:
        app = HearthApp(node, share=False)  # the default poll, as a member runs it
        frames = painted_frames(app)
        t0 = time.perf_counter()
        async with app.run_test(size=(110, 34)) as pilot:
            await pilot.pause()
            first_paint = frames[0] - t0
            await pilot.press("2")
            await pilot.pause()
            table = app.query_one("#resource-table", DataTable)
            table.focus()
            await pilot.pause()
            moves, settled = [], []
            for _ in range(20):
                row = table.cursor_row
                t = time.perf_counter()
                await pilot.press("down")
                await pilot.pause()
                settled.append(time.perf_counter() - t)
                assert table.cursor_row == row + 1
                moves.append(next(f for f in frames if f > t) - t)
            t = time.perf_counter()
            await pilot.press("s")  # sort by kind: the whole table is refilled
            await pilot.pause()
            resort = next(f for f in frames if f > t) - t
            # The member reads the screen for a moment: the app loads the ledger meanwhile
            # (an arrival before that, or while keys keep coming, pays for the load: ~1 s).
            await asyncio.sleep(1.5)
            shared = []
            for n in range(10):
                with member.change() as ledger:
                    added = ledger.add_resource(f"A shared {n}")  # sorts into the rows shown
                mine = member.identity.device_key.public
                envelope = [b for b in member.feeds.all() if b.author == mine][-1].envelope
                await asyncio.sleep(0.3)  # apart, as changes from others come
                t = time.perf_counter()
                take_in(node, envelope, source="bench")  # as the app's sharing does
                shared.append(await until_shown(table, added.id, frames, t))
            arrivals = []
            for n in range(5):
                with open_node(home) as another, another.change() as ledger:
                    added = ledger.add_resource(f"Arrived {n}")
                t = time.perf_counter()  # stored: from here the app notices it by polling
                arrivals.append(await until_shown(table, added.id, frames, t))
    return {
        "first_paint_ms": round(first_paint * 1000),
        "cursor_move_ms_p50": round(statistics.median(moves) * 1000, 1),
        "cursor_move_ms_max": round(max(moves) * 1000, 1),
        # The same key presses until the test pilot finds the app idle: its idle check
        # sleeps 20 ms at a time, so this is an upper bound, not what a member sees.
        "cursor_move_until_idle_ms_p50": round(statistics.median(settled) * 1000, 1),
        "sort_refill_ms": round(resort * 1000),
        "shared_change_to_row_ms": [round(a * 1000) for a in shared],
        "shared_change_to_row_ms_p50": round(statistics.median(shared) * 1000),
        "other_process_change_to_row_ms": [round(a * 1000) for a in arrivals],
        "targets": {"first_paint_ms": 1000, "key_press_ms": 100, "remote_change_ms": 200},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hearth-tui-bench-"))
    home, other = root / "home", root / "other"
    built = build(home, other, args.entries)
    result = {
        "benchmark": "tui",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "entries": args.entries,
        "build_s": round(built, 1),
        **asyncio.run(measure(home, other)),
    }
    save_result("tui", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
