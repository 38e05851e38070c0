"""The attacks of issue #8 (a member who cheats, and a wire that damages), tried again
through real ``hearth`` and ``hearth-relay`` processes on 127.0.0.1: each is refused, and
the honest members' ledgers stay identical (docs/security.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from hearth.node import open_node
from tests.conftest import Cli
from tests.test_sync_processes import Relay, start_relay
from tests.wire_proxy import WireProxy, wire_proxy

pytestmark = pytest.mark.process


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    running = start_relay(tmp_path / "relay")
    yield running
    running.kill()


def resources(cli: Cli) -> list[str]:
    return sorted(r["name"] for r in json.loads(cli("resource", "list", "--json").out))


def pair(tmp_path: Path, relay_url: str) -> tuple[Cli, Cli]:
    """Ada's group on ``relay_url`` and Ben in it, both synced."""
    ada, ben = Cli(tmp_path / "ada"), Cli(tmp_path / "ben")
    ada("init", "--name", "Ada")
    ada("group", "create", "Elm Street", "--relay", relay_url)
    token = ada("invite", "--token").out.strip()
    ada("sync")
    ben("join", token, "--name", "Ben")
    ada("sync")
    ben("sync")
    return ada, ben


def test_bundles_damaged_on_the_way_are_fetched_again(tmp_path: Path, relay: Relay) -> None:
    """R16: the node rejects what arrives damaged but never moves its cursor past it, so
    once the path is clean the next sync brings everything."""
    proxy: WireProxy
    with wire_proxy(relay.url) as proxy:
        ada, ben = pair(tmp_path, proxy.url)
        with open_node(ada.home) as node:  # sixty edits, each its own bundle
            for i in range(60):
                with node.change() as ledger:
                    ledger.add_resource(f"Seed tray {i:02d}", quantity=Decimal(1))
        ada("sync")
        wanted = resources(ada)
        assert len(wanted) == 60

        proxy.damage = 3
        damaged = ben("sync")
        assert proxy.damaged == 3  # the proxy did damage what the relay sent
        assert "3 bundles arrived damaged: read again next time" in damaged.out
        assert len(resources(ben)) < 60

        clean = ben("sync")
        assert "damaged" not in clean.out
        assert resources(ben) == wanted  # without R16: 57 of 60 never arrive

        status = ben("status").out
        assert f"3 bundles arrived damaged from {proxy.url}" in status
        assert "each is read again" in status
        findings = json.loads(ben("doctor", "--json", check=False).out)
        damage = [f for f in findings if f["check"] == f"damage from {proxy.url}"]
        assert len(damage) == 1
        assert "3 bundles arrived damaged" in damage[0]["detail"]
