"""A ``hearth`` process killed with SIGKILL at any moment loses at most the command in
flight and never corrupts the store (SECURITY.md §8: 100 kills, integrity_check ok)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

from hearth.node.node import open_node
from tests.conftest import Cli, hearth_command

KILLS = 100


@pytest.mark.process
def test_sigkill_at_random_moments_loses_nothing_acknowledged(cli: Cli) -> None:
    seed = int(os.environ.get("HEARTH_SEED", random.randrange(2**32)))
    print(f"HEARTH_SEED={seed}")
    rng = random.Random(seed)
    cli("init", "--name", "Ada")
    cli("group", "create", "Crash test")
    # Bring the store close to its snapshot threshold so compactions happen mid-test too.
    with open_node(cli.home) as node:
        for i in range(470):
            with node.change() as ledger:
                ledger.add_resource(f"seed item {i}", quantity=Decimal(1))
    acknowledged: list[str] = []
    kills = attempt = 0
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    while kills < KILLS:
        attempt += 1
        assert attempt < KILLS * 5, "processes keep finishing before the kill"
        name = f"item {attempt}"
        command = ["resource", "add", name, "--qty", "3"]
        if attempt % 3 == 0 and acknowledged:
            # An event on an existing resource (produce cannot run out, unlike consume,
            # whose earlier unacknowledged runs may already have used the stock up).
            command = ["produce", acknowledged[-1], "--qty", "1"]
        proc = subprocess.Popen(
            [*hearth_command(), "--home", str(cli.home), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        time.sleep(rng.uniform(0.0, 0.45))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
        else:
            _, err = proc.communicate()
            assert proc.returncode == 0, err
            if command[0] == "resource":
                acknowledged.append(name)
    path = cli.home / "hearth.db"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    listed = json.loads(cli("resource", "list", "--json").out)
    names = {r["name"] for r in listed}
    assert set(acknowledged) <= names
    assert len([n for n in names if n.startswith("seed item")]) == 470
    # The store still takes writes after all that.
    cli("resource", "add", "after the storm")


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    from hearth.errors import StorageError
    from hearth.store import Store

    path = tmp_path / "hearth.db"
    Store.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StorageError, match="newer Hearth"):
        Store.open(path)
