"""Several relays are redundancy (hearth/net/sync_client.py, ``sync_relays``): ``hearth sync``
talks to all of a group's relays at once, each with its own deadline, so a frozen relay
(a real relay process stopped with SIGSTOP) holds back none of the others."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, hearth_command
from tests.test_sync_processes import start_relay

pytestmark = pytest.mark.process


def bundles_at(data: Path) -> int:
    with sqlite3.connect(f"file:{data / 'relay.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT COUNT(*) FROM envelopes").fetchone()
    return int(row[0])


def test_a_frozen_relay_never_holds_back_the_others(tmp_path: Path) -> None:
    frozen = start_relay(tmp_path / "frozen")
    working = start_relay(tmp_path / "working")
    try:
        ada = Cli(tmp_path / "ada")
        ada("init", "--name", "Ada")
        ada("group", "create", "Two relays", "--relay", frozen.url)  # listed first
        ada("relay", "add", working.url)
        ada("sync")

        frozen.proc.send_signal(signal.SIGSTOP)
        ada("resource", "add", "Ladder")
        before = bundles_at(working.data)
        started = time.monotonic()
        syncing = subprocess.Popen(
            [*hearth_command(), "--home", str(ada.home), "sync", "--timeout", "6", "--json"],
            env={k: v for k, v in os.environ.items() if k != "HEARTH_HOME"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The working relay has the new bundle while the sync still waits for the other.
        while bundles_at(working.data) == before:
            assert syncing.poll() is None, syncing.communicate()
            assert time.monotonic() - started < 5, "the working relay waited for the frozen one"
            time.sleep(0.05)
        uploaded_after = time.monotonic() - started
        out, err = syncing.communicate(timeout=30)
        took = time.monotonic() - started
        report = json.loads(out)
        assert report["relays_ok"] == [working.url], err
        assert [r["url"] for r in report["relays_failed"]] == [frozen.url]
        # A frozen process's kernel still takes the connection: the opening's own deadline
        # (hearth.net.connect, 5 s) ends it, within the sync's.
        assert "did not answer within 5 s" in report["relays_failed"][0]["error"]
        assert uploaded_after < 5 <= took < 12  # one deadline, not one after another
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
        frozen.kill()
        working.kill()
