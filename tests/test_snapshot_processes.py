"""Attacks 1 and 2 of issue #19, through real ``hearth`` and ``hearth-relay`` processes on
127.0.0.1: a forged snapshot published to the group's relay makes nobody an admin and
lets no removed member back in (R13, docs/security.md §6). The honest members, and a new
device that reads the forged snapshot first, end with identical ledgers."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.crypto import SigningKey
from hearth.ledger import LedgerDoc, membership_rules
from hearth.ledger.ledger import LIVE
from hearth.net import sync_client
from hearth.node.node import Node, open_node
from hearth.protocol.bundle import Envelope, Inner, cover_proof, encode_snapshot, seal_bundle
from tests.conftest import Cli
from tests.test_cheating_processes import pair, resources
from tests.test_sync_processes import Relay, start_relay

pytestmark = pytest.mark.process


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    running = start_relay(tmp_path / "relay")
    yield running
    running.kill()


def people(cli: Cli) -> dict[str, str]:
    """Name -> role (or status, for those gone) of everyone the member's node lists."""
    listed = json.loads(cli("member", "list", "--all", "--json").out)
    return {m["name"]: m["role"] if m["status"] == "active" else m["status"] for m in listed}


def forged_snapshot(node: Node, gid: str, doc: LedgerDoc, device: SigningKey) -> Envelope:
    """``doc`` as a snapshot of everything ``node`` holds, signed by ``device``."""
    keys = node.feeds.current_keys(gid)
    inner = Inner(
        kind="snapshot",
        group_id=keys.group_id,
        epoch_id=keys.epoch_id,
        author=device.public,
        seq=0,
        prev=b"",
        auth_heads=(),
        created_at=0,
        payload=encode_snapshot([(LIVE, doc.save())], node.feeds.heads(gid)),
    )
    return seal_bundle(inner, keys=keys, device=device, salt=os.urandom(32))


def publish(node: Node, url: str, gid: str, envelope: Envelope) -> None:
    """Give the relay a snapshot, as a node gives its own (sync_client.give_snapshots)."""
    keys = node.feeds.current_keys(gid)
    covers = sync_client._cursor(node, url, keys.topic)
    due = iter([(envelope.id, envelope.encode(), covers, cover_proof(keys, envelope.id, covers))])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sync_client, "snapshot_due", lambda *_: next(due, None))
        reports = asyncio.run(sync_client.give_snapshots(node, [url], [gid], timeout=30))
    assert all(r.ok for r in reports)


def newcomer(tmp_path: Path, ada: Cli) -> Cli:
    """Cat joins with Ada's token: her device's first sync starts from the relay's
    snapshot — the forged one."""
    cat = Cli(tmp_path / "cat")
    token = ada("invite", "--token").out.strip()
    ada("sync")
    cat("join", token, "--name", "Cat")
    for cli in (cat, ada, cat):
        cli("sync")
    return cat


def test_a_forged_snapshot_makes_no_member_an_admin(tmp_path: Path, relay: Relay) -> None:
    """Attack 1: Ben, a member, writes into the group's document under Ada's actor id —
    himself an admin, her ladder renamed — and publishes it as a snapshot."""
    ada, ben = pair(tmp_path, relay.url)
    ada("resource", "add", "Ladder")
    ada("sync")
    ben("sync")
    with open_node(ben.home) as node:
        gid = node.current_group().id
        view = node.view(gid)
        ada_card = next(
            c
            for c in membership_rules.cards(view.tables["members"])
            if c.member_id != node.identity.member_id
        )
        ladder = next(r for r in view.resources() if r.name == "Ladder")
        forged = LedgerDoc.load(node.ledger(gid).doc.save(), next(iter(ada_card.actors)))
        with forged.edit() as w:
            w.put("members", node.identity.member_id, {"role": "admin"})
            w.put("resources", ladder.id, {"name": "Ben's ladder now"})
        publish(node, relay.url, gid, forged_snapshot(node, gid, forged, node.identity.device_key))
    cat = newcomer(tmp_path, ada)
    ben("sync")
    for cli in (ada, ben, cat):
        assert people(cli) == {"Ada": "admin", "Ben": "member", "Cat": "member"}, cli.home.name
        assert resources(cli) == ["Ladder"], cli.home.name


def test_a_removed_member_does_not_get_back_in_through_a_snapshot(
    tmp_path: Path, relay: Relay
) -> None:
    """Attack 2: Ben, removed, seals under the old key a snapshot listing a new device of
    his as an admin, signed by that device."""
    ada, ben = pair(tmp_path, relay.url)
    ada("member", "remove", "Ben", "--yes")
    ada("resource", "add", "Ladder")  # sealed under the new key, which Ben lacks
    ada("sync")
    with open_node(ben.home) as node:
        gid = node.current_group().id
        device = SigningKey.generate()
        actor = os.urandom(16)
        card = {
            "name": "Ben again",
            "role": "admin",
            "devices": {
                "d1": {
                    "key": device.public.hex(),
                    "kem": os.urandom(32).hex(),
                    "actors": {actor.hex(): True},
                }
            },
        }
        forged = LedgerDoc.load(node.ledger(gid).doc.save(), actor)
        with forged.edit() as w:
            w.put("members", "ben-again", card)
        publish(node, relay.url, gid, forged_snapshot(node, gid, forged, device))
    cat = newcomer(tmp_path, ada)
    for cli in (ada, cat):
        assert people(cli) == {"Ada": "admin", "Ben": "removed", "Cat": "member"}, cli.home.name
        assert resources(cli) == ["Ladder"], cli.home.name
