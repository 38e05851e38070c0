"""Removal costs; writes a JSON result to bench/results/.

    python bench/removal_bench.py [--changes 50000] [--runs 5]

Two measurements:

- **rebuild**: a node holds a ledger of ``--changes`` Automerge changes and has applied a
  bundle that a removed member wrote after their removal; then the removal arrives. The
  time is that of taking the removal in: marking the late bundle invalid, rebuilding every
  document from the valid changes, and saving it (SECURITY.md R8). Target < 60 s.
- **rotation**: a real ``hearth-relay`` on 127.0.0.1 and three members whose nodes run
  ``hearth serve``; an admin runs ``hearth member remove`` then ``hearth sync``. The time is
  from starting ``member remove`` until every online member's node seals under the new
  epoch (polled in its store every 20 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from sync_bench import save_result, start_relay

from hearth.group import member_changes
from hearth.ledger import Kind
from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.validity.intake import Verdict, take_in

HEARTH = str(Path(sys.executable).parent / "hearth")


def rebuild(root: Path, changes: int) -> dict[str, object]:
    homes = {name: root / name for name in ("ada", "dan", "obs")}
    for name, home in homes.items():
        create_identity(home, name=name.title())
    ada, dan, obs = (open_node(home) for home in homes.values())
    gid = ada.create_group("Bench").id
    for node in (dan, obs):
        node.join_with_token(ada.create_invite())
        with node.change() as ledger:
            ledger.add_resource(f"{node.identity.name}'s box", kind=Kind.OTHER)
        for bundle in node.feeds.all(gid):
            take_in(ada, bundle.envelope, source="bench")
    t0 = time.perf_counter()
    made = 0
    with ada.change() as ledger:
        ids = [ledger.add_resource(f"Thing {i}", kind=Kind.TOOL).id for i in range(200)]
    while made < changes:
        with ada.change() as ledger:
            for _ in range(min(1000, changes - made)):
                ledger.edit_resource(ids[made % len(ids)], note=f"note {made}")
                made += 1
    built_s = time.perf_counter() - t0
    for bundle in ada.feeds.all(gid):
        take_in(dan, bundle.envelope, source="bench")
        take_in(obs, bundle.envelope, source="bench")
    member_changes.remove_member(ada, gid, "Dan")
    with dan.change() as ledger:  # Dan has not heard: past his cutoff
        ledger.add_resource("Late ladder", kind=Kind.TOOL)
    for bundle in dan.feeds.all(gid):
        take_in(obs, bundle.envelope, source="bench")
    assert "Late ladder" in {r.name for r in obs.view().resources()}
    removal = [b for b in ada.feeds.all(gid) if b.state == "applied"]
    t0 = time.perf_counter()
    verdicts = [take_in(obs, b.envelope, source="bench").verdict for b in removal]
    rebuild_s = time.perf_counter() - t0
    assert Verdict.APPLIED in verdicts
    assert "Late ladder" not in {r.name for r in obs.view().resources()}
    total = len(obs.ledger(gid).doc.change_ids())
    for node in (ada, dan, obs):
        node.close()
    return {
        "changes_in_ledger": total,
        "build_s": round(built_s, 1),
        "rebuild_after_late_removal_s": round(rebuild_s, 2),
        "target_s": 60,
    }


def hearth(home: Path, *args: str) -> str:
    return subprocess.run(
        [HEARTH, "--home", str(home), *args], capture_output=True, text=True, check=True
    ).stdout


def newest_epoch(home: Path, group_id: str) -> int:
    """The highest epoch number a member's node holds (read-only, beside its serve)."""
    with sqlite3.connect(f"file:{home / 'hearth.db'}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT MAX(number) FROM epochs WHERE group_id = ? AND eligible = 1", (group_id,)
        ).fetchone()
    return int(row[0])


def rotation(root: Path, runs: int) -> dict[str, object]:
    config = root / "relay.toml"
    config.write_text("[relay]\n")
    relay, url = start_relay(root / "relay", config)
    serving: list[subprocess.Popen[str]] = []
    try:
        ada = root / "r-ada"
        hearth(ada, "init", "--name", "Ada")
        hearth(ada, "group", "create", "Bench", "--relay", url)
        group_id = json.loads(hearth(ada, "group", "list", "--json"))[0]["id"]
        others = []
        for i in range(3 + runs):
            home = root / f"r-m{i}"
            token = json.loads(hearth(ada, "invite", "--token", "--json"))["token"]
            hearth(home, "join", token, "--name", f"M{i}")
            hearth(home, "sync")
            others.append(home)
        hearth(ada, "sync")
        online = others[:3]
        for home in online:
            serving.append(
                subprocess.Popen(
                    [HEARTH, "--home", str(home), "serve", "--no-lan"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        time.sleep(3)
        times = []
        for i in range(runs):
            before = {home: newest_epoch(home, group_id) for home in online}
            t0 = time.perf_counter()
            hearth(ada, "member", "remove", f"M{3 + i}", "--yes")
            hearth(ada, "sync")
            deadline = time.monotonic() + 60
            waiting = set(online)
            while waiting and time.monotonic() < deadline:
                waiting = {h for h in waiting if newest_epoch(h, group_id) == before[h]}
                time.sleep(0.02)
            assert not waiting, "some members never got the new key"
            times.append(time.perf_counter() - t0)
        return {
            "online_members": len(online),
            "runs_s": [round(t, 2) for t in times],
            "p50_s": round(statistics.median(times), 2),
            "max_s": round(max(times), 2),
        }
    finally:
        for proc in serving:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    root = Path(tempfile.mkdtemp(prefix="hearth-removal-bench-"))
    result = {
        "rebuild": rebuild(root, args.changes),
        "rotation": rotation(root, args.runs),
    }
    save_result("removal", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
