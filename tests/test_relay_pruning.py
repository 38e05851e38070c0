"""Relays delete snapshots that newer ones supersede once the retention period has passed,
and keep every bundle a snapshot covers (R13: a node checks a snapshot against them): a
node that was away longer than that, and a new device, still catch up."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hearth.errors import StorageError
from hearth.net import sync_client
from hearth.net.sync_client import sync_relay
from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.protocol.bundle import EpochKeys, registration_proof
from hearth.protocol.frames import PROTOCOL_VERSION, Publish, Register, Welcome
from hearth.protocol.sync import RelaySession, Send, Settled, TopicPlan
from relay.config import RelayConfig
from relay.core import CatchUp, RelayCore
from relay.sqlite_store import SqliteStore
from tests.test_sync_processes import start_relay

RETENTION = 1000.0
TOPIC = bytes(32)


def _store_with_two_snapshots(path: Path) -> SqliteStore:
    """Ten bundles at cursors 1-10, a snapshot at 11 covering 1-8 (noted at t=40), one
    more bundle at 12 and a snapshot at 13 covering 1-12 (noted at t=50)."""
    store = SqliteStore(path)
    store.register(TOPIC, os.urandom(32))
    for i in range(13):
        store.add(TOPIC, os.urandom(32), f"bundle {i + 1}".encode())
    store.add_snapshot(TOPIC, 11, 8, now=40.0)
    store.add_snapshot(TOPIC, 13, 12, now=50.0)
    store.commit()
    return store


def _core(store: SqliteStore, now: float) -> RelayCore:
    config = RelayConfig(snapshot_retention_s=RETENTION)
    return RelayCore(config, store, clock=lambda: 0.0, wall_clock=lambda: now)


def test_nothing_is_pruned_before_the_retention_period(tmp_path: Path) -> None:
    store = _store_with_two_snapshots(tmp_path / "relay.db")
    assert _core(store, now=50.0 + RETENTION - 1).prune() == 0
    assert store.topic(TOPIC).bundles == 13


def test_a_superseded_snapshot_goes_and_the_bundles_it_covers_stay(tmp_path: Path) -> None:
    store = _store_with_two_snapshots(tmp_path / "relay.db")
    used_before = store.topic(TOPIC).bytes
    core = _core(store, now=50.0 + RETENTION)
    assert core.prune() == 1  # the snapshot at 11
    assert core.prune() == 0  # nothing more to do
    assert store.topic(TOPIC).bundles == 12
    assert store.topic(TOPIC).bytes == used_before - len("bundle 11")
    assert store.pruned_through(TOPIC) == 0

    # A fresh device: the newest snapshot, then every bundle, those it covers too (R13).
    fresh = CatchUp(client=1, topic=TOPIC, after=0, from_snapshot=True)
    assert [d.cursor for d in core.catch_up(fresh)] == [13, *range(1, 11), 12]
    # A node that was away, last read up to cursor 3, carries on from there.
    away = [d.cursor for d in core.catch_up(CatchUp(client=1, topic=TOPIC, after=3))]
    assert away == [*range(4, 11), 12, 13]


def test_an_older_store_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE topics (topic BLOB PRIMARY KEY, relay_key BLOB NOT NULL, "
            "bytes INTEGER NOT NULL DEFAULT 0, bundles INTEGER NOT NULL DEFAULT 0);"
            "CREATE TABLE snapshots (topic BLOB NOT NULL, cursor INTEGER NOT NULL, "
            "covers INTEGER NOT NULL, PRIMARY KEY (topic, cursor));"
        )
    store = SqliteStore(path)
    store.register(TOPIC, os.urandom(32))
    store.commit()
    assert store.pruned_through(TOPIC) == 0
    store.close()


@pytest.mark.process
def test_a_node_away_longer_than_the_retention_and_a_new_device_catch_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_client, "SNAPSHOT_EVERY", 10)
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\nsnapshot_retention_s = 0\nprune_every_s = 0.2\n")
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        create_identity(tmp_path / "writer", name="Writer")
        create_identity(tmp_path / "away", name="Away")
        with open_node(tmp_path / "writer") as writer, open_node(tmp_path / "away") as away:
            group = writer.create_group("Pruned").id
            with writer.change() as ledger:
                ledger.add_relay(relay.url)
            away.join_with_token(writer.create_invite())
            assert asyncio.run(sync_relay(writer, relay.url, [group], timeout=30)).ok
            assert asyncio.run(sync_relay(away, relay.url, [group], timeout=30)).ok
            for i in range(30):  # while `away` is away
                with writer.change() as ledger:
                    ledger.add_resource(f"Thing {i}")
            assert asyncio.run(sync_relay(writer, relay.url, [group], timeout=30)).ok

            def stored(table: str) -> int:
                with sqlite3.connect(relay.data / "relay.db") as db:
                    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608

            for _ in range(100):  # bounded wait for the pruner's next round
                if stored("snapshots") == 1:
                    break
                asyncio.run(asyncio.sleep(0.1))
            assert stored("snapshots") == 1  # the superseded snapshots went
            assert stored("envelopes") >= 33  # every bundle stayed

            report = asyncio.run(sync_relay(away, relay.url, [group], timeout=30))
            assert report.ok, report.error
            assert {f"Thing {i}" for i in range(30)} <= {r.name for r in away.view().resources()}
            assert away.feeds.heads(group) == writer.feeds.heads(group)

            create_identity(tmp_path / "new", name="New")
            with open_node(tmp_path / "new") as new:
                new.join_with_token(writer.create_invite())
                report = asyncio.run(sync_relay(new, relay.url, [group], timeout=30))
                assert report.ok, report.error
                names = {r.name for r in new.view().resources()}
                assert {f"Thing {i}" for i in range(30)} <= names
    finally:
        relay.kill()


def test_a_plan_that_reads_nothing_registers_settles_and_can_still_publish() -> None:
    keys = EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
    plan = TopicPlan(
        topic=keys.topic,
        relay_key=keys.relay_key.public,
        proof=registration_proof(keys),
        after=0,
        read=False,
    )
    session = RelaySession(plans=[plan])
    session.start()
    out = session.handle(Welcome(version=PROTOCOL_VERSION, limits={}))
    assert [type(o.frame) for o in out if isinstance(o, Send)] == [Register]  # no Subscribe
    assert isinstance(out[-1], Settled)
    sent = session.publish_snapshot(b"snapshot id", b"envelope", 7, b"proof")
    assert [type(o.frame) for o in sent if isinstance(o, Send)] == [Publish]


@pytest.mark.process
def test_a_live_node_leaves_relay_snapshots_to_its_compaction_process(tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "relay")
    try:
        create_identity(tmp_path / "writer", name="Writer")
        create_identity(tmp_path / "other", name="Other")
        with open_node(tmp_path / "writer", durable=False) as writer:
            writer.compact_elsewhere = True  # as `hearth serve` and the app run
            group = writer.create_group("Busy").id
            with writer.change() as ledger:
                ledger.add_relay(relay.url)
            with open_node(tmp_path / "other") as other:
                other.compact_elsewhere = True  # it gives the relay no snapshot either
                other.join_with_token(writer.create_invite())
                for i in range(sync_client.SNAPSHOT_EVERY + 10):
                    with writer.change() as ledger:
                        ledger.add_resource(f"Thing {i}")
                assert asyncio.run(sync_relay(writer, relay.url, [group], timeout=60)).ok
                # Then another member's bundles reach the relay, not yet the writer's node.
                assert asyncio.run(sync_relay(other, relay.url, [group], timeout=60)).ok
                with other.change() as ledger:
                    ledger.add_resource("Said while the writer compacts")
                assert asyncio.run(sync_relay(other, relay.url, [group], timeout=60)).ok

            def snapshots() -> int:
                with sqlite3.connect(relay.data / "relay.db") as db:
                    return int(db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0])

            assert snapshots() == 0  # the loop did not stop to save the document
            assert writer.compactions_due == {group}
            heads_before = writer.feeds.heads(group)
        done = subprocess.run(
            [sys.executable, "-m", "hearth.net.compaction", str(tmp_path / "writer"), group],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert snapshots() == 1
        with open_node(tmp_path / "writer") as writer:
            # The compaction process took nothing in (that is the loop's job) ...
            assert writer.feeds.heads(group) == heads_before
            # ... and did not move how far the node has read the relay: what the other
            # member said still comes, at the next sync.
            assert asyncio.run(sync_relay(writer, relay.url, [group], timeout=60)).ok
            names = {r.name for r in writer.view().resources()}
            assert "Said while the writer compacts" in names
    finally:
        relay.kill()


def test_pruning_never_touches_a_batch_still_being_written(tmp_path: Path) -> None:
    """Found under parallel tests: a prune while publishes waited for their commit rolled
    them back, though they were about to be acknowledged."""
    store = _store_with_two_snapshots(tmp_path / "relay.db")
    store.add(TOPIC, os.urandom(32), b"staged, not yet committed")
    with pytest.raises(StorageError):
        store.prune(older_than=10_000.0)
    store.commit()
    assert store.topic(TOPIC).bundles == 14  # the staged bundle is there
    assert store.prune(older_than=10_000.0) == 1  # and pruning works once it is committed
