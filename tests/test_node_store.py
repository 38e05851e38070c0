"""The node over its store: snapshots, reloads, and two processes sharing one home."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from hearth.errors import LedgerError
from hearth.ledger import Ledger, LedgerDoc
from hearth.net.compaction import compact_in_background
from hearth.node import node as node_module
from hearth.node.identity import create_identity
from hearth.node.node import LIVE, Node, open_node
from hearth.testing import FakeClock, seeded_ids


@pytest.fixture
def home(tmp_path: Path) -> Path:
    create_identity(tmp_path / "h", name="Ada")
    with open_node(tmp_path / "h") as node:
        node.create_group("Allotment")
    return tmp_path / "h"


def names(node: Node) -> set[str]:
    return {r.name for r in node.ledger().view.resources()}


def test_changes_after_a_snapshot_survive_reload(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "_SNAPSHOT_EVERY", 5)
    with open_node(home) as node:
        for i in range(12):
            with node.change() as ledger:
                ledger.add_resource(f"r{i}")
        group = node.current_group().id
        assert node.store.snapshot(group, LIVE) is not None
        assert len(node.store.changes_after(group, LIVE, 0)) < 5
    with open_node(home) as node:
        assert names(node) == {f"r{i}" for i in range(12)}


def test_snapshot_keeps_changes_still_waiting_for_their_dependencies(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "_SNAPSHOT_EVERY", 3)
    with open_node(home) as ada:
        group = ada.current_group()
        mine = ada.ledger()
        # Another device's copy of the ledger makes two changes, the second after the first.
        other = Ledger(
            LedgerDoc.load(mine.doc.save(), b"\x07" * 16),
            author=mine.author,
            clock=FakeClock(),
            new_id=seeded_ids(7),
        )
        other.add_resource("first")
        other.add_resource("second")
        first, second = (c for _, e in other.take_outbox() for c in e.changes)
    with open_node(home) as ada:
        ada.receive_changes(group.id, [second])  # waits: its dependency is missing
        for i in range(4):
            with ada.change() as ledger:
                ledger.add_resource(f"r{i}")
        assert "second" not in names(ada)
        ada.receive_changes(group.id, [first])
        assert {"first", "second"} <= names(ada)
    with open_node(home) as ada:
        assert {"first", "second", "r0", "r3"} <= names(ada)


def test_another_process_on_the_same_home_sees_each_write(home: Path) -> None:
    with open_node(home) as one, open_node(home) as two:
        assert names(two) == set()
        with one.change() as ledger:
            r = ledger.add_resource("Ladder", quantity=Decimal(2))
        assert names(two) == {"Ladder"}
        with two.change() as ledger:
            ledger.consume(r.id, Decimal(1))
        with one.change() as ledger:
            assert ledger.view.resource(r.id).quantity == 1
            ledger.consume(r.id, Decimal(1))
        assert two.ledger().view.resource(r.id).quantity == 0
        assert sorted(one.ledger().doc.heads()) == sorted(two.ledger().doc.heads())


def test_a_failed_edit_stores_nothing_and_is_forgotten(home: Path) -> None:
    with open_node(home) as node:
        heads = node.ledger().doc.heads()
        with pytest.raises(LedgerError), node.change() as ledger:
            ledger.add_resource("half done")
            raise LedgerError("stop")
        assert node.ledger().doc.heads() == heads
        assert names(node) == set()


def test_a_node_keeping_its_loop_responsive_compacts_in_another_process(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "_SNAPSHOT_EVERY", 5)
    with open_node(home) as node:
        node.compact_elsewhere = True
        group = node.current_group().id
        for i in range(8):
            with node.change() as ledger:
                ledger.add_resource(f"r{i}")
        assert node.compactions_due == {group}
        assert node.store.snapshot(group, LIVE) is None  # not saved on this loop's time
        before = len(node.store.changes_after(group, LIVE, 0))

        async def run_once() -> None:
            task = asyncio.create_task(compact_in_background(node, poll_s=0.01))
            for _ in range(500):  # bounded: the child process takes well under 5 s
                await asyncio.sleep(0.01)
                if node.store.snapshot(group, LIVE) is not None:
                    break
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(run_once())
        assert node.store.snapshot(group, LIVE) is not None
        assert len(node.store.changes_after(group, LIVE, 0)) < before
        assert node.compactions_due == set()
        with node.change() as ledger:  # the node carries on over the compacted store
            ledger.add_resource("after")
    with open_node(home) as node:
        assert names(node) == {f"r{i}" for i in range(8)} | {"after"}


def test_a_fresh_device_keeps_a_snapshots_bytes_and_its_own_join_across_a_reload(
    home: Path, tmp_path: Path
) -> None:
    from hearth.protocol.bundle import encode_snapshot
    from hearth.validity.intake import take_snapshot

    with open_node(home) as ada:
        for i in range(30):
            with ada.change() as ledger:
                ledger.add_resource(f"r{i}")
        group = ada.current_group().id
        token = ada.create_invite()
        saved = ada.ledger().doc.save()
        snapshot = ada.feeds.seal_snapshot(
            group, encode_snapshot([(LIVE, saved)], ada.feeds.heads(group))
        )
        create_identity(tmp_path / "ben", name="Ben")
        with open_node(tmp_path / "ben") as ben:
            ben.join_with_token(token)  # Ben's own changes: his joining the group
            covered = [b.envelope for b in ada.feeds.all(group)]  # taken with it (R13)
            outcome, taken = take_snapshot(ben, snapshot.encode(), covered, source="test")
            assert outcome.applied == 1 + len(covered) == 1 + len(taken)
            stored = ben.store.snapshot(group, LIVE)
            assert stored is not None
            assert stored[0] == saved  # kept as it came, not saved again
            heads = sorted(ben.ledger(group).doc.heads())
            members = {m.name for m in ben.view(group).members()}
    with open_node(tmp_path / "ben") as ben:  # what was stored makes the same document
        assert sorted(ben.ledger(group).doc.heads()) == heads
        assert {r.name for r in ben.ledger(group).view.resources()} == {f"r{i}" for i in range(30)}
        assert {m.name for m in ben.view(group).members()} == members == {"Ada", "Ben"}


def test_a_store_from_an_older_hearth_is_brought_up_to_date_in_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written by an older Hearth (fewer migrations) gets the rest on opening,
    all in one transaction: a migration that fails leaves it as it was."""
    from hearth.store import sqlite as store_module

    every = store_module._migrations()
    path = tmp_path / "hearth.db"
    monkeypatch.setattr(store_module, "_migrations", lambda: every[:3])
    store_module.Store.open(path).close()
    broken = [*every[:-1], (every[-1][0], "CREATE TABLE broken (;")]
    monkeypatch.setattr(store_module, "_migrations", lambda: broken)
    with pytest.raises(Exception, match="syntax error"):
        store_module.Store.open(path)
    with sqlite3.connect(path) as db:  # nothing of the failed upgrade stayed
        assert db.execute("PRAGMA user_version").fetchone()[0] == every[2][0]
        assert not db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'seen_snapshots'"
        ).fetchall()
    monkeypatch.setattr(store_module, "_migrations", lambda: every)
    with store_module.Store.open(path) as store:
        assert store.query("PRAGMA user_version")[0][0] == every[-1][0]
        tables = {row[0] for row in store.query("SELECT name FROM sqlite_master")}
    assert {"bundles", "seen_snapshots"} <= tables
