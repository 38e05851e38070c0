"""Catch-up of a fresh device, several versions of Hearth interleaved; writes a JSON result
to bench/results/.

    python bench/catchup_compare.py --version before=TREE --version after=TREE[:STORE_OF]
        [--entries 10000] [--rounds 3]

Each version is a source tree (a checkout, or ``git archive COMMIT | tar -x -C TREE``).
Each builds a relay store once with its own code: a writer enters ``--entries`` entries
one edit at a time and syncs them, with the snapshot its node gives the relay, through a
real ``hearth-relay`` (what ``bench/sync_bench.py --catch-up-only`` does). ``:STORE_OF``
makes a version use the store another version built instead (versions whose relays keep
the same store). Then, round after round, in an order turned by one each round, every
version's own ``hearth-relay`` is started on a fresh copy of its store and a fresh device
of that version joins and catches up through it: the wall time of the sync, the device's
CPU time (its process and any it started), the relay's CPU time, and the bytes the relay
sent (its metrics; relays from before they counted them give none).
Medians per version at the end, with the machine's load average before each run: on a
shared machine only figures from one run compare.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
RELAY_CONFIG = (
    "[relay]\nmax_connections_per_ip = 5000\nmax_connections = 6000\n"
    "publish_burst = 100000\npublish_per_s = 100000.0\n"
    # A device busy taking a snapshot in answers no ping meanwhile: on a loaded machine
    # that can pass the default heartbeat and have the relay close on it.
    "heartbeat_s = 600.0\nsend_stall_s = 600.0\n"
)


def _start_relay(tree: Path, data: Path, config: Path) -> tuple[subprocess.Popen[str], str]:
    """A ``hearth-relay`` of the version in ``tree`` on a free loopback port."""
    command = [sys.executable, "-m", "relay.cli", "--port", "0", "--data", str(data)]
    proc = subprocess.Popen(
        [*command, "--config", str(config)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    return proc, line.removeprefix("listening on ")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait()


def _bytes_out(url: str) -> int | None:
    """What a relay has sent so far, from its /metrics (``None``: a relay from before it
    counted that)."""
    import aiohttp

    async def read() -> str:
        metrics = url.replace("ws://", "http://") + "/metrics"
        async with aiohttp.ClientSession() as http, http.get(metrics) as response:
            return await response.text()

    for line in asyncio.run(read()).splitlines():
        if line.startswith("hearth_relay_bytes_out_total"):
            return int(float(line.split()[-1]))
    return None


def _cpu_s(pid: int) -> float:
    """The CPU seconds a process has used so far (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(tree: Path, *args: str) -> dict[str, object]:
    """Run this file's ``child`` command with the version in ``tree``; its JSON answer."""
    done = subprocess.run(
        [sys.executable, __file__, "child", *args],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(args[:1])} failed:\n{done.stderr[-4000:]}")
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


# --- in the child, with the version under test on the path ------------------------------


def _hearth(name: str, old_name: str) -> Any:
    """A module of the version on the path: by its name since the folders of issue 22, or
    by the flat name older trees give it."""
    import hearth

    # Asked by folder, not by trying: an editable install would answer for the new name.
    foldered = (Path(hearth.__file__).parent / "net").is_dir()
    return importlib.import_module(name if foldered else old_name)


def _build(root: Path, url: str, entries: int) -> dict[str, object]:
    sync_relay = _hearth("hearth.net.sync_client", "hearth.sync_client").sync_relay
    create_identity = _hearth("hearth.node.identity", "hearth.identity").create_identity
    open_node = _hearth("hearth.node.node", "hearth.node").open_node
    encode_token = _hearth("hearth.protocol.invite_token", "hearth.invite").encode_token

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
        report = asyncio.run(sync_relay(writer, url, [group], timeout=3600))
        assert report.ok, report.error
    return {"group": group, "token": encode_token(token)}


def _catch_up(root: Path, url: str, group: str, token: str, entries: int) -> dict[str, object]:
    import hearth

    sync_relay = _hearth("hearth.net.sync_client", "hearth.sync_client").sync_relay
    create_identity = _hearth("hearth.node.identity", "hearth.identity").create_identity
    open_node = _hearth("hearth.node.node", "hearth.node").open_node
    decode_token = _hearth("hearth.protocol.invite_token", "hearth.invite").decode_token

    create_identity(root / "fresh", name="Fresh")
    with open_node(root / "fresh") as fresh:
        fresh.join_with_token(decode_token(token))
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        report = asyncio.run(sync_relay(fresh, url, [group], timeout=3600))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        assert report.ok, report.error
        assert len(fresh.view().resources()) == entries
    # What worker processes spent (reaped by now: a pool is shut down before the sync ends).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "catch_up_s": round(elapsed, 3),
        "process_cpu_s": round(cpu + children.ru_utime + children.ru_stime, 3),
        "bundles": report.received,
        "snapshots": getattr(report, "snapshots", None),
        # The source tree's folder name only: which code ran, without a path outside the repo.
        "hearth": Path(hearth.__file__).parent.parent.name,
    }


def _child_main(argv: list[str]) -> int:
    command, root, url, *rest = argv
    if command == "build":
        answer = _build(Path(root), url, int(rest[0]))
    else:
        group, token, entries = rest
        answer = _catch_up(Path(root), url, group, token, int(entries))
    print(json.dumps(answer))
    return 0


# --- the parent -----------------------------------------------------------------------------


def _median(runs: list[dict[str, object]], name: str, key: str) -> float | None:
    values = [float(str(r[key])) for r in runs if r["version"] == name and r[key] is not None]
    return round(statistics.median(values), 3) if values else None


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", action="append", required=True, metavar="NAME=TREE[:OF]")
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep (or reuse) the built stores here")
    parser.add_argument("--label", default="catchup-compare")
    args = parser.parse_args()
    versions: dict[str, tuple[Path, str]] = {}
    for spec in args.version:
        name, _, rest = spec.partition("=")
        tree, _, of = rest.partition(":")
        versions[name] = (Path(tree).resolve(), of or name)
    work = Path(tempfile.mkdtemp(prefix="hearth-catchup-compare-"))
    stores = args.keep or work / "stores"
    config = work / "relay.toml"
    config.write_text(RELAY_CONFIG)
    built: dict[str, dict[str, object]] = {}
    try:
        for name, (tree, of) in versions.items():
            if of != name:
                if of not in versions:  # a store kept from another run (--keep)
                    built[of] = json.loads((stores / of / "built.json").read_text())
                continue
            home = stores / name
            answer_file = home / "built.json"
            if answer_file.exists():
                built[name] = json.loads(answer_file.read_text())
                continue
            home.mkdir(parents=True)
            relay, url = _start_relay(tree, home / "relay", config)
            try:
                t0 = time.perf_counter()
                built[name] = _child(tree, "build", str(home), url, str(args.entries))
                print(f"built {name}'s store in {time.perf_counter() - t0:.0f} s", flush=True)
            finally:
                _stop(relay)
            answer_file.write_text(json.dumps(built[name]))
        if args.rounds == 0:
            return 0
        runs: list[dict[str, object]] = []
        names = list(versions)
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for name in order:
                tree, of = versions[name]
                run_dir = work / f"run-{round_no}-{name}"
                shutil.copytree(stores / of / "relay", run_dir / "relay")
                load = _load()
                relay, url = _start_relay(tree, run_dir / "relay", config)
                try:
                    before, relay_cpu = _bytes_out(url), _cpu_s(relay.pid)
                    b = built[of]
                    answer = _child(
                        tree,
                        "catchup",
                        str(run_dir),
                        url,
                        str(b["group"]),
                        str(b["token"]),
                        str(args.entries),
                    )
                    after = _bytes_out(url)
                    answer["wire_bytes"] = (
                        None if before is None or after is None else after - before
                    )
                    answer["relay_cpu_s"] = round(_cpu_s(relay.pid) - relay_cpu, 3)
                finally:
                    _stop(relay)
                    shutil.rmtree(run_dir)
                answer = {"version": name, "round": round_no, "load_before": load, **answer}
                print(json.dumps(answer), flush=True)
                runs.append(answer)
        keys = ("catch_up_s", "process_cpu_s", "relay_cpu_s", "wire_bytes")
        medians = {name: {key: _median(runs, name, key) for key in keys} for name in names}
        result = {
            "benchmark": "catch-up of a fresh device, versions interleaved",
            "how": "bench/catchup_compare.py",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count()},
            "entries": args.entries,
            "versions": {n: {"store_built_by": of} for n, (_, of) in versions.items()},
            "runs": runs,
            "median": medians,
        }
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"sync-{time.strftime('%Y%m%d-%H%M%S')}-{args.label}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(medians, indent=2))
        print(f"written to {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(_child_main(sys.argv[2:]))
    sys.exit(main())
