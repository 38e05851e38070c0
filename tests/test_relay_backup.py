"""``hearth-relay backup`` while the relay takes writes, and ``restore`` into a new relay
that serves every bundle it had to nodes that never talked to the old one — on each store."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from relay.identity import load_or_create
from relay.sqlite_store import SqliteStore
from tests import postgres
from tests.conftest import Cli, hearth_command
from tests.test_sync_processes import start_relay

pytestmark = pytest.mark.process


def relay_script() -> list[str]:
    """The installed ``hearth-relay`` command, or the module."""
    script = Path(sys.executable).parent / "hearth-relay"
    return [str(script)] if script.exists() else [sys.executable, "-m", "relay.cli"]


def relay_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*relay_script(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
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
        f"for i in $(seq 1 6); do {hearth} --home {writer.home} resource add Thing$i "
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
    old_id = relay_command("id", "--data", str(relay.data)).stdout.strip()
    assert f"with the identity of relay {old_id}" in made.stdout
    assert stat.S_IMODE((tmp_path / "backup.db").stat().st_mode) == 0o600
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
    assert f"The relay's id is {old_id}." in restored.stdout
    assert stat.S_IMODE((new / "relay.key").stat().st_mode) == 0o600
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
        info_url = new_relay.url.replace("ws://", "http://") + "/info"
        with urllib.request.urlopen(info_url, timeout=10) as info:  # noqa: S310 - loopback
            assert json.loads(info.read())["relay_id"] == old_id  # peers still know it
        fresh("relay", "add", new_relay.url)
        first = json.loads(fresh("sync", "--json", check=False).out)
        assert new_relay.url in first["relays_ok"]
        assert first["received"] > 0  # what the backup held, to a node new to this relay
        writer("relay", "add", new_relay.url)
        writer("sync", check=False)  # the writer re-uploads whatever is newer
        fresh("sync", check=False)
        names = {r["name"] for r in json.loads(fresh("resource", "list", "--json").out)}
        assert names == {f"Thing{i}" for i in range(1, 7)}
    finally:
        new_relay.kill()


def test_restoring_something_that_is_not_a_backup_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    result = relay_command("restore", str(junk), "--data", str(tmp_path / "new"))
    assert result.returncode == 1
    assert "not a relay backup" in result.stderr
    assert not (tmp_path / "new" / "relay.db").exists()


def a_relay_data_directory(data: Path) -> str:
    """A data directory with an (empty) store and an identity key; the relay's id."""
    SqliteStore(data / "relay.db").close()
    return relay_command("id", "--data", str(data)).stdout.strip()


def test_a_restore_that_would_change_the_relay_id_asks_first(tmp_path: Path) -> None:
    old_id = a_relay_data_directory(tmp_path / "old")
    secret = (tmp_path / "old" / "relay.key").read_bytes()
    made = relay_command("backup", str(tmp_path / "b.db"), "--data", str(tmp_path / "old"))
    assert made.returncode == 0, made.stderr
    assert secret in (tmp_path / "b.db").read_bytes()
    # A new machine where the relay was started once already: it made an id of its own.
    other, third = tmp_path / "new", tmp_path / "third"
    other_id = load_or_create(other).public.hex()
    load_or_create(third)
    assert other_id != old_id
    other_key = (other / "relay.key").read_bytes()
    refused = relay_command("restore", str(tmp_path / "b.db"), "--data", str(other))
    assert refused.returncode == 1
    assert "would change this relay's id" in refused.stderr
    assert "--force" in refused.stderr
    assert not (other / "relay.db").exists()  # nothing was written
    assert (other / "relay.key").read_bytes() == other_key

    # At a terminal the operator is asked; "y" takes the backup's id.
    controller, terminal = os.openpty()
    os.write(controller, b"y\n")
    asked = subprocess.run(
        [*relay_script(), "restore", str(tmp_path / "b.db"), "--data", str(other)],
        stdin=terminal,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(controller)
    os.close(terminal)
    assert asked.returncode == 0, asked.stderr
    assert f"changed from {other_id} to {old_id}" in asked.stdout
    assert (other / "relay.key").read_bytes() == secret
    assert (other / "relay.key.replaced").read_bytes() == other_key  # not lost
    assert secret not in (other / "relay.db").read_bytes()  # the store keeps no copy

    forced = relay_command("restore", str(tmp_path / "b.db"), "--data", str(third), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (third / "relay.key").read_bytes() == secret
