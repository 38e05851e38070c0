"""``hearth-relay backup`` while the relay takes writes, and ``restore`` into a new relay
that serves every bundle it had to nodes that never talked to the old one — on each store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests import postgres
from tests.conftest import Cli, hearth_command
from tests.test_sync_processes import start_relay

pytestmark = pytest.mark.process


def relay_command(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "hearth-relay"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "relay.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, check=False
    )


def stored(data: Path, store: list[str]) -> int:
    """How many bundles the relay with this data directory and store arguments holds."""
    if store:
        with psycopg.connect(store[1]) as db:
            row = db.execute("SELECT COUNT(*) FROM envelopes").fetchone()
    else:
        with sqlite3.connect(data / "relay.db") as db:
            row = db.execute("SELECT COUNT(*) FROM envelopes").fetchone()
    assert row is not None
    return int(row[0])


def test_backup_during_writes_then_restore_serves_everything(
    tmp_path: Path, relay_store: list[str], request: pytest.FixtureRequest
) -> None:
    relay = start_relay(tmp_path / "old", extra=relay_store)
    writer = Cli(tmp_path / "writer")
    writer("init", "--name", "Writer")
    writer("group", "create", "Backed up", "--relay", relay.url)
    token = writer("invite", "--token").out.splitlines()[0]
    writer("sync")
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    hearth = " ".join(hearth_command())
    loop = (
        f"for i in $(seq 1 8); do {hearth} --home {writer.home} resource add Thing$i "
        f"&& {hearth} --home {writer.home} sync; done"
    )
    writing = subprocess.Popen(["/bin/sh", "-c", loop], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while stored(relay.data, relay_store) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        made = relay_command(
            "backup", str(tmp_path / "backup.db"), "--data", str(relay.data), *relay_store
        )
    finally:
        writing.wait(timeout=120)
    assert made.returncode == 0, made.stderr
    again = relay_command(
        "backup", str(tmp_path / "backup.db"), "--data", str(relay.data), *relay_store
    )
    assert again.returncode == 1
    assert "does not overwrite" in again.stderr
    relay.kill()

    new = tmp_path / "new"
    # Into an empty store of the same kind: a new directory, or a new database.
    new_store = (
        ["--database", postgres.fresh_database(request.getfixturevalue("postgres_server"))]
        if relay_store
        else []
    )
    restore = ("restore", str(tmp_path / "backup.db"), "--data", str(new), *new_store)
    restored = relay_command(*restore)
    assert restored.returncode == 0, restored.stderr
    twice = relay_command(*restore)
    assert twice.returncode == 1
    assert "restore into an empty" in twice.stderr
    in_backup = stored(new, new_store)
    assert in_backup >= 4
    new_relay = start_relay(new, extra=new_store)
    try:
        fresh = Cli(tmp_path / "fresh")
        fresh("init", "--name", "Fresh")
        fresh("join", token, check=False)  # the token names the old relay: not reachable
        fresh("relay", "add", new_relay.url)
        first = json.loads(fresh("sync", "--json", check=False).out)
        assert new_relay.url in first["relays_ok"]
        assert first["received"] > 0  # what the backup held, to a node new to this relay
        writer("relay", "add", new_relay.url)
        writer("sync", check=False)  # the writer re-uploads whatever is newer
        fresh("sync", check=False)
        names = {r["name"] for r in json.loads(fresh("resource", "list", "--json").out)}
        assert names == {f"Thing{i}" for i in range(1, 9)}
    finally:
        new_relay.kill()


def test_restoring_something_that_is_not_a_backup_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    result = relay_command("restore", str(junk), "--data", str(tmp_path / "new"))
    assert result.returncode == 1
    assert "not a relay backup" in result.stderr
    assert not (tmp_path / "new" / "relay.db").exists()
