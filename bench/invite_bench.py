"""Invite round trip on loopback; writes a JSON result to bench/results/.

    python bench/invite_bench.py [--runs 5]

A real ``hearth-relay`` on 127.0.0.1 and a group with a few entries. Each run starts
``hearth invite --yes`` and, as soon as it prints the code, ``hearth join CODE``; the
time is from starting ``hearth invite`` until ``hearth join`` has exited with the new
member joined and the group's bundles fetched (both real processes, so Python start-up
counts, as it does for a member).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sync_bench import save_result, start_relay

HEARTH = str(Path(sys.executable).parent / "hearth")


def hearth(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HEARTH, "--home", str(home), *args], capture_output=True, text=True, check=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hearth-invite-bench-"))
    config = root / "relay.toml"
    config.write_text("[relay]\n")
    relay, url = start_relay(root / "relay", config)
    try:
        ada = root / "ada"
        hearth(ada, "init", "--name", "Ada")
        hearth(ada, "group", "create", "Bench", "--relay", url)
        for i in range(20):
            hearth(ada, "resource", "add", f"Thing {i}")
        hearth(ada, "sync")
        times = []
        for run in range(args.runs):
            t0 = time.perf_counter()
            inviting = subprocess.Popen(
                [HEARTH, "--home", str(ada), "invite", "--yes", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert inviting.stdout is not None
            code = json.loads(inviting.stdout.readline())["code"]
            joiner = root / f"joiner{run}"
            joined = hearth(joiner, "join", code, "--relay", url, "--name", f"J{run}", "--json")
            times.append(time.perf_counter() - t0)
            assert "group" in joined.stdout
            inviting.wait(timeout=30)
    finally:
        relay.terminate()
        relay.wait()
    result = {
        "benchmark": "invite",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "runs": args.runs,
        "invite_to_joined_and_synced_s_p50": round(statistics.median(times), 2),
        "invite_to_joined_and_synced_s_max": round(max(times), 2),
    }
    save_result("invite", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
