"""Removal end to end: real ``hearth`` and ``hearth-relay`` processes on 127.0.0.1, and a
harness holding the removed member's keys that tries everything they could."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.errors import ProtocolError
from hearth.ledger import Kind, LedgerDoc
from hearth.ledger.model import TABLES
from hearth.net.sync_client import sync_relay
from hearth.node.node import open_node
from hearth.protocol.bundle import decode_changes, open_envelope, parse_envelope
from tests.conftest import Cli, hearth_command
from tests.test_invites import first_line, group_at, start_invite
from tests.test_sync_processes import Relay, start_relay


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    running = start_relay(tmp_path / "relay")
    yield running
    running.kill()


def join_by_code(ada: Cli, home: Path, name: str, relay_url: str) -> Cli:
    inviting = start_invite(ada, "--yes", "--timeout", "60")
    code = first_line(inviting)["code"]
    member = Cli(home)
    member("join", code, "--relay", relay_url, "--name", name)
    _, err = inviting.communicate(timeout=60)
    assert inviting.returncode == 0, err
    return member


def names(cli: Cli) -> set[str]:
    return {r["name"] for r in json.loads(cli("resource", "list", "--json").out)}


def relay_envelopes(relay: Relay) -> list[bytes]:
    with sqlite3.connect(relay.data / "relay.db") as db:
        return [bytes(row[0]) for row in db.execute("SELECT data FROM envelopes")]


@pytest.mark.process
def test_invite_join_remove_and_the_removed_member_is_shut_out(
    tmp_path: Path, relay: Relay
) -> None:
    ada = group_at(tmp_path, relay.url)
    ben = join_by_code(ada, tmp_path / "ben", "Ben", relay.url)
    cat = join_by_code(ada, tmp_path / "cat", "Cat", relay.url)
    for member in (ben, ada, cat, ben):
        member("sync")
    listed = json.loads(cat("member", "list", "--json").out)
    assert {m["name"]: m["role"] for m in listed} == {
        "Ada": "admin",
        "Ben": "member",
        "Cat": "member",
    }
    assert all(len(m["devices"]) == 1 for m in listed)

    # Only admins remove; Ben cannot remove Cat.
    refused = ben("member", "remove", "Cat", "--yes", check=False)
    assert refused.code == 1
    assert "Only the group's admins" in refused.err

    removed = json.loads(ada("member", "remove", "Ben", "--yes", "--json").out)
    assert removed["name"] == "Ben"
    ada("resource", "add", "Secret seed tin", "--kind", "food")
    ada("sync")
    cat("sync")  # Cat was offline during the removal: she finds the new key on reconnect
    assert "Secret seed tin" in names(cat)
    assert [m["name"] for m in json.loads(cat("member", "list", "--json").out)] == ["Ada", "Cat"]
    gone = json.loads(cat("member", "list", "--all", "--json").out)
    assert {m["name"]: m["status"] for m in gone}["Ben"] == "removed"
    cat("resource", "add", "Cat's jam", "--kind", "food")
    cat("sync")

    # Ben's own node: syncs, learns he is out, reads nothing new and refuses to write.
    ben("sync")
    assert not {"Secret seed tin", "Cat's jam"} & names(ben)
    write = ben("resource", "add", "Sneaky ladder", "--kind", "tool", check=False)
    assert write.code == 1
    assert "no longer in" in write.err

    # The harness: Ben's keys, without the node's manners. He writes anyway and uploads.
    with open_node(tmp_path / "ben") as node:
        group_id = node.current_group().id
        with node.store.write(), node.writing(group_id) as ledger:
            ledger.add_resource("Sneaky ladder", kind=Kind.TOOL)
        report = asyncio.run(sync_relay(node, relay.url, [group_id], timeout=30))
        assert report.ok, report.error
        assert report.sent >= 1
        held = [keys for _, keys in node.feeds.epochs(group_id)]
    for member in (ada, cat):
        member("sync")
        assert "Sneaky ladder" not in names(member)
        with open_node(member.home) as node:  # it arrived, and was refused for what it is
            reasons = [str(r[0]) for r in node.store.query("SELECT reason FROM rejected_arrivals")]
        assert "a bundle from a removed device, written after its removal" in reasons

    # Of everything on the relay's disk, Ben's keys open only what was written under the
    # old key; everything on the new topic stays shut to him.
    readable = LedgerDoc.genesis(bytes.fromhex(group_id), TABLES, b"\x01" * 16)
    new_topic = 0
    for data in relay_envelopes(relay):
        envelope = parse_envelope(data)
        mine = [keys for keys in held if keys.topic == envelope.topic]
        if mine:
            inner = open_envelope(envelope, mine[0])
            if inner.kind == "content":
                readable.apply([change for _, change, _ in decode_changes(inner.payload)])
            continue
        new_topic += 1
        for keys in held:
            with pytest.raises(ProtocolError):
                open_envelope(envelope, keys)
    seen = {str(r.get("name")) for r in readable.read_table("resources").values()}
    assert "Apple press" in seen  # what he saw while a member, he keeps
    assert not {"Secret seed tin", "Cat's jam"} & seen
    assert new_topic >= 2  # Ada's tin and Cat's jam, at least


@pytest.mark.process
def test_a_second_device_by_code_writes_as_its_member_until_removed(
    tmp_path: Path, relay: Relay
) -> None:
    ada = group_at(tmp_path, relay.url)
    adding = subprocess.Popen(
        [*hearth_command(), "--home", str(ada.home), "device", "add", "--json", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "HEARTH_HOME"},
    )
    code = first_line(adding)["code"]
    tablet = Cli(tmp_path / "tablet")  # no identity yet, and no name given: it is Ada's
    tablet("join", code, "--relay", relay.url)
    _, err = adding.communicate(timeout=60)
    assert adding.returncode == 0, err
    me = json.loads(ada("whoami", "--json").out)
    there = json.loads(tablet("whoami", "--json").out)
    assert there["member_id"] == me["member_id"]
    assert there["device_id"] != me["device_id"]
    tablet("resource", "add", "Wheelbarrow", "--kind", "tool")
    tablet("sync")
    ada("sync")
    assert "Wheelbarrow" in names(ada)
    listed = json.loads(ada("member", "list", "--json").out)
    assert [(m["name"], len(m["devices"]), m["role"]) for m in listed] == [("Ada", 2, "admin")]
    devices = json.loads(ada("device", "list", "--json").out)
    assert len(devices) == 2
    tablet_id = next(d["id"] for d in devices if not d["this_device"])

    ada("device", "remove", tablet_id[:8], "--yes")
    ada("resource", "add", "New lock code", "--kind", "other")
    ada("sync")
    tablet("sync")
    assert "New lock code" not in names(tablet)  # the new key was not sealed to it
    refused = tablet("resource", "add", "Sneaky", "--kind", "tool", check=False)
    assert refused.code == 1
    assert "no longer in" in refused.err


@pytest.mark.process
def test_a_relay_freezes_the_old_topic_after_a_removal(tmp_path: Path) -> None:
    """With no grace period configured, the relay refuses the removed member's upload
    under the old key as soon as a remaining member has synced after the removal."""
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\nfreeze_grace_s = 0.0\n")
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        ada = group_at(tmp_path, relay.url)
        ben = Cli(tmp_path / "ben")
        ben("join", ada("invite", "--token").out.splitlines()[0], "--name", "Ben")
        for member in (ada, ben, ada):
            member("sync")
        ada("member", "remove", "Ben", "--yes")
        ada("sync")  # seals under the new key, and asks the relay to freeze the old topic
        with open_node(tmp_path / "ben") as node:
            group_id = node.current_group().id
            with node.store.write(), node.writing(group_id) as ledger:
                ledger.add_resource("Sneaky ladder", kind=Kind.TOOL)
            report = asyncio.run(sync_relay(node, relay.url, [group_id], timeout=30))
        assert report.refused
        assert all("newer key" in reason for reason in report.refused), report.refused
        before = len(relay_envelopes(relay))
        ada("sync")
        assert len(relay_envelopes(relay)) == before
    finally:
        relay.kill()


@pytest.mark.process
def test_a_removed_member_is_told_so_when_they_sync_and_in_status(
    tmp_path: Path, relay: Relay
) -> None:
    from tests.test_readme_tour import InProcess  # nothing here waits or asks

    ada, ben = InProcess(tmp_path / "ada"), InProcess(tmp_path / "ben")
    ada("init", "--name", "Ada")
    ada("group", "create", "Orchard", "--relay", relay.url)
    token = ada("invite", "--token").out.strip()
    ada("sync")
    ben("join", token, "--name", "Ben")
    ada("sync")
    ada("member", "remove", "Ben", "--yes")
    ada("sync")
    ben("resource", "add", "Ben's saw")  # written after his removal, before he knows
    synced = ben("sync")
    assert "You were removed from 'Orchard' by Ada" in synced.out
    assert "1 change you made after you were removed did not count" in synced.out
    status = ben("status")
    assert "You were removed from 'Orchard' by Ada" in status.out
    assert "You were removed" not in ada("status").out
