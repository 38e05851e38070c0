"""The attacks of issue #8 (a member who cheats, and a wire that damages), tried again
through real ``hearth`` and ``hearth-relay`` processes on 127.0.0.1: each is refused, and
the honest members' ledgers stay identical (docs/security.md)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from hearth.node.node import open_node
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
        # The proxy did damage what the relay sent: up to three frames, fewer when a
        # catch-up's bundles come many to a frame. It counts the frames it spoiled, the
        # node the bundles it must read again.
        assert 1 <= proxy.damaged <= 3
        found = re.search(r"(\d) bundles? arrived damaged: read again next time", damaged.out)
        assert found is not None, damaged.out
        count = int(found[1])
        assert 1 <= count <= 3
        noun = "bundle" if count == 1 else "bundles"
        assert len(resources(ben)) < 60

        clean = ben("sync")
        assert "damaged" not in clean.out
        assert resources(ben) == wanted  # without R16: 57 of 60 never arrive

        status = ben("status").out
        assert f"{count} {noun} arrived damaged from {proxy.url}" in status
        assert "each is read again" in status
        findings = json.loads(ben("doctor", "--json", check=False).out)
        damage = [f for f in findings if f["check"] == f"damage from {proxy.url}"]
        assert len(damage) == 1
        assert f"{count} {noun} arrived damaged" in damage[0]["detail"]


def test_a_join_token_used_twice_lets_in_one_device(tmp_path: Path, relay: Relay) -> None:
    """Attack 3 (R14): a printed token passed on to a second person. The device the
    inviter's node confirms first is in on every node; the other is not, nothing of it
    waits for good, the inviter is told, and so is the one turned away."""
    ada, ben = pair(tmp_path, relay.url)
    token = ada("invite", "--token").out.strip()
    ada("sync")
    eve, mal = Cli(tmp_path / "eve"), Cli(tmp_path / "mal")
    eve("join", token, "--name", "Eve")
    ada("sync")  # Ada's node confirms Eve, the first claim it sees
    mal("join", token, "--name", "Mal")  # the same token again
    mal("resource", "add", "Mal's crowbar")
    for cli in (mal, ada, ben, eve, ada, ben):
        cli("sync")
    for cli in (ada, ben, eve):
        names = [m["name"] for m in json.loads(cli("member", "list", "--json").out)]
        assert sorted(names) == ["Ada", "Ben", "Eve"], cli.home.name
        assert "Mal's crowbar" not in resources(cli)
        assert json.loads(cli("status", "--json").out)["gaps"] == 0
    alerts = json.loads(ada("status", "--json").out)["admin_alerts"]
    assert [a["kind"] for a in alerts] == ["second-claim"]
    assert "'Mal'" in alerts[0]["what"]
    assert "used by another device first" in mal("status").out


def test_a_removed_admin_cannot_remove_the_admin_who_removed_him(
    tmp_path: Path, relay: Relay
) -> None:
    """Attack 4 (R7): Ben, an admin, is removed by Ada; from a copy of his home made
    before, he removes Ada and syncs. Ada has been an admin longer: her removal of Ben
    stands everywhere, what she writes afterwards counts, and every admin is told."""
    ada, ben = pair(tmp_path, relay.url)
    cat = Cli(tmp_path / "cat")
    token = ada("invite", "--token").out.strip()
    ada("sync")
    cat("join", token, "--name", "Cat")
    ada("sync")  # Cat's claim reaches Ada's node, which confirms it (R14)
    ada("member", "promote", "Ben")
    ada("member", "promote", "Cat")
    for cli in (ada, ben, cat, ada):
        cli("sync")
    shutil.copytree(ben.home, tmp_path / "ben-before")
    ada("member", "remove", "Ben", "--yes")
    ada("sync")
    ada("resource", "add", "Ada's wheelbarrow")
    ada("sync")
    old_ben = Cli(tmp_path / "ben-before")
    old_ben("member", "remove", "Ada", "--yes")
    old_ben("sync", check=False)  # the relay may refuse the old key's topic by now
    shipped = tmp_path / "old-ben.bundles"
    old_ben("bundle", "export", str(shipped))  # or by hand, to someone who takes it
    cat("bundle", "import", str(shipped))
    for cli in (cat, ada, cat):
        cli("sync")
    for cli in (ada, cat):
        people = {
            m["name"]: m["status"] for m in json.loads(cli("member", "list", "--all", "--json").out)
        }
        assert people["Ada"] == "active", cli.home.name
        assert people["Ben"] == "removed", cli.home.name
        assert "Ada's wheelbarrow" in resources(cli)
        alerts = json.loads(cli("status", "--json").out)["admin_alerts"]
        assert [a["kind"] for a in alerts] == ["counter-removal"], cli.home.name
        assert "Ada's removal of Ben stands" in alerts[0]["what"]


def test_a_resource_added_in_another_members_name_counts_nowhere(
    tmp_path: Path, relay: Relay
) -> None:
    """R2a: Ben's modified client adds a resource saying Ada added it and syncs; Ada's node
    refuses that bundle, and what Ben wrote in his own name before it counts."""
    ada, ben = pair(tmp_path, relay.url)
    with open_node(ada.home) as node:
        ada_id = node.identity.member_id
    with open_node(ben.home) as node:
        with node.change() as ledger:
            ledger.add_resource("Ben's saw")
        with node.change() as ledger:
            ledger.author = ada_id  # the modification
            ledger.add_resource("Forged saw")
    ben("sync")
    ada("sync")
    seen = resources(ada)
    assert "Ben's saw" in seen
    assert "Forged saw" not in seen  # without R2a: there, "added by Ada"
