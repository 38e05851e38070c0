"""Peered relays as real processes on 127.0.0.1 (DESIGN §6, SECURITY.md §8).

Figures: three relays peered in a line A–B–C; a member whose node knows only A and one whose
node knows only C see each other's edits (two hops, both ways) with no bundle arriving at any
relay twice; all three hold identical bundle sets; no relay's disk holds a word of the
ledger; the middle relay killed, a group listing A and C carries on.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.test_sync_processes import Relay, start_relay, wait_until

pytestmark = pytest.mark.process


def relay_id(data: Path) -> str:
    script = Path(sys.executable).parent / "hearth-relay"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "relay.cli"]
    done = subprocess.run(
        [*command, "id", "--data", str(data)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def metric(relay: Relay, name: str) -> float:
    """The sum of a Prometheus counter over all its labels."""
    url = relay.url.replace("ws://", "http://") + "/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    pattern = re.compile(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.M)
    values = pattern.findall(text)
    assert values, f"{name} is not among the metrics"
    return sum(float(value) for value in values)


def bundle_ids(relay: Relay) -> set[bytes]:
    with sqlite3.connect(relay.data / "relay.db") as db:
        return {bytes(row[0]) for row in db.execute("SELECT id FROM envelopes")}


def relays_in_a_line(root: Path) -> tuple[Relay, Relay, Relay]:
    """Relays A–B–C on 127.0.0.1: A and C dial B, which accepts them."""
    ids = {name: relay_id(root / name) for name in ("a", "b", "c")}
    b = start_relay(root / "b", extra=["--accept-peer", ids["a"], "--accept-peer", ids["c"]])
    return peered_with(root / "a", b), b, peered_with(root / "c", b)


def peered_with(data: Path, b: Relay, port: int = 0) -> Relay:
    """A relay on ``data`` that dials ``b``."""
    return start_relay(data, port=port, extra=["--peer", f"{b.url}#{relay_id(b.data)}"])


def restarted_without(relay: Relay, b: Relay) -> Relay:
    """The same relay started again on its port and store, still dialing ``b`` (down)."""
    return peered_with(relay.data, b, port=int(relay.url.rsplit(":", 1)[1]))


def stop_and_search(relays: list[Relay], words: tuple[bytes, ...]) -> None:
    """Stop the relays and check that none of ``words`` is readable in their files."""
    for relay in relays:
        relay.kill(signal.SIGTERM)
        disk = b"".join(p.read_bytes() for p in relay.data.glob("relay.db*"))
        for word in words:
            assert word not in disk, f"{word!r} is readable on relay {relay.data.name}"


def resources(cli: Cli) -> set[str]:
    return {r["name"] for r in json.loads(cli("resource", "list", "--json").out)}


def test_members_on_relays_two_hops_apart_sync_through_the_middle(tmp_path: Path) -> None:
    a, b, c = relays_in_a_line(tmp_path)
    relays = [a, b, c]
    try:
        ada, ben = Cli(tmp_path / "ada"), Cli(tmp_path / "ben")
        ada("init", "--name", "Ada")
        ada("group", "create", "Allotment", "--relay", a.url)
        ada("resource", "add", "Ladder", "--kind", "tool")
        token = ada("invite", "--token").out.splitlines()[0]
        ada("sync")
        ben("join", token, "--name", "Ben")
        # From now on Ben's node knows only relay C (its ledger change reaches Ada later).
        ben("relay", "add", c.url)
        ben("relay", "remove", a.url)

        ada("resource", "add", "Wheelbarrow", "--kind", "tool")
        assert json.loads(ada("sync", "--json").out)["relays_ok"] == [a.url]

        def ben_has_it() -> bool:
            report = json.loads(ben("sync", "--json").out)
            assert report["relays_ok"] == [c.url]
            return "Wheelbarrow" in resources(ben)

        assert wait_until(ben_has_it), "Ada's edit did not cross A→B→C"

        ben("resource", "add", "Seed trays", "--qty", "12")
        ben("sync")

        def ada_has_it() -> bool:
            ada("sync")
            return "Seed trays" in resources(ada)

        assert wait_until(ada_has_it), "Ben's edit did not cross C→B→A"
        assert wait_until(lambda: bundle_ids(a) == bundle_ids(b) == bundle_ids(c))
        # Each bundle arrived at each relay once: any second arrival would be counted.
        assert [metric(r, "hearth_relay_peer_duplicates_total") for r in relays] == [0, 0, 0]
        assert metric(b, "hearth_relay_peer_bundles_in_total") == len(bundle_ids(b))
        assert metric(b, "hearth_relay_peer_links") == 2
        assert wait_until(lambda: metric(b, "hearth_relay_peer_lag_bundles") == 0)
        assert metric(a, "hearth_relay_topics_by_size") == 1  # one topic, in some bucket
        assert 0 < metric(a, "hearth_relay_topic_quota_used_max") < 0.01

        stop_and_search(relays, (b"Wheelbarrow", b"Seed trays", b"Ladder", b"Allotment", b"Ada"))
        a, c = restarted_without(a, b), restarted_without(c, b)
        relays = [a, c]  # the middle relay stays down

        ada("relay", "add", a.url)  # the group now lists A and C
        ada("resource", "add", "Hoe", "--kind", "tool")
        report = json.loads(ada("sync", "--json").out)
        assert sorted(report["relays_ok"]) == sorted([a.url, c.url])
        ben("sync")
        assert "Hoe" in resources(ben)
    finally:
        for relay in relays:
            relay.kill(signal.SIGTERM)
