"""Both relay stores keep the same promises (SQLite and PostgreSQL, each test on each:
the conformance suite of the store port in relay/storage.py, every method of it), and
relay processes sharing a PostgreSQL store pass each other's bundles on in cursor order.

The cores here are the production :class:`~relay.core.RelayCore`, driven by hand: two cores
on two connections to one database are two relay processes, minus the sockets.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hearth.errors import StorageError
from hearth.protocol.bundle import registration_proof
from hearth.protocol.connection import Connection, Role
from hearth.protocol.frames import Ack, Deliver, Hello, Publish, Register, Subscribe
from relay.config import RelayConfig
from relay.core import Output, RelayCore, ToClient
from relay.postgres_store import PostgresStore, backup_to_file, restore_from_file
from relay.sqlite_store import SqliteStore, backup_store, restore_store
from relay.storage import (
    BundleBatch,
    OperatorStore,
    PeeringStore,
    Registered,
    SessionStore,
    SharedStore,
    Store,
    Stored,
    TopicChecks,
    TopicReads,
    TopicState,
    UpkeepStore,
)
from tests.peering_simulation import make_pool

TOPIC = bytes(range(32))
OTHER = bytes(range(1, 33))


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the store under test; a second call is a second process's view of it."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "relay.db"

        def opener() -> Store:
            assert not opened, "one process owns an SQLite store"
            opened.append(SqliteStore(path))
            return opened[-1]
    else:
        url = request.getfixturevalue("postgres_url")

        def opener() -> Store:
            opened.append(PostgresStore(url))
            return opened[-1]

    yield opener
    for store in opened:
        store.close()


def _usage(store: Store) -> tuple[int, int]:
    topic = store.topic(TOPIC)
    assert topic is not None
    return topic.bytes, topic.bundles


def _frozen_at(store: Store) -> float:
    topic = store.topic(TOPIC)
    assert topic is not None
    return topic.frozen_at


def test_registering_a_topic_is_new_then_known_and_taken_by_no_other_key(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    assert store.register(TOPIC, b"k" * 32, b"proof") is Registered.NEW
    assert store.register(TOPIC, b"k" * 32) is Registered.KNOWN
    assert store.register(TOPIC, b"x" * 32, b"other") is Registered.TAKEN
    assert store.topic(TOPIC) == TopicState(b"k" * 32, 0.0, 0, 0)
    assert store.registration(TOPIC) == (b"k" * 32, b"proof")
    assert store.topic(OTHER) is None


def test_a_batch_is_stored_once_in_cursor_order_and_counted(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    store.register(TOPIC, b"k" * 32)
    first = store.add(TOPIC, b"a", b"one")
    second = store.add(TOPIC, b"b", b"two!")
    again = store.add(TOPIC, b"a", b"one")
    assert store.busy()
    store.commit()
    assert not store.busy()
    assert first.new
    assert second.new
    assert not again.new
    assert first.cursor < second.cursor == store.newest(TOPIC) == store.newest_overall()
    assert again.cursor == first.cursor
    assert store.after(TOPIC, 0) == [(first.cursor, b"one"), (second.cursor, b"two!")]
    assert _usage(store) == (7, 2)
    assert store.counts() == (1, 2)
    assert store.topic_sizes() == [(7, 2)]
    assert [c.cursor for c in store.committed_after(0, first.cursor)] == [first.cursor]
    assert store.at(second.cursor) == b"two!"


def test_pages_are_read_by_bytes_not_only_by_count(open_store: Callable[[], Store]) -> None:
    """A page holds no more than ``max_bytes`` of envelopes (always at least one), for a
    catch-up, a peer relay's mirror and the fan-out between processes alike."""
    store = open_store()
    store.register(TOPIC, b"k" * 32)
    sizes = [300, 300, 500, 2000, 10, 10]
    cursors = [store.add(TOPIC, bytes([n]), bytes(size)).cursor for n, size in enumerate(sizes)]
    store.commit()
    assert [c for c, _ in store.after(TOPIC, 0, max_bytes=700)] == cursors[:2]
    assert [c for c, _ in store.after(TOPIC, cursors[2], max_bytes=700)] == cursors[3:4]
    assert [c for c, _ in store.after(TOPIC, cursors[3], max_bytes=700)] == cursors[4:]
    assert [c for c, _, _ in store.all_after(0, max_bytes=1100)] == cursors[:3]
    assert [c.cursor for c in store.committed_after(0, None, max_bytes=1)] == cursors[:1]
    assert len(store.after(TOPIC, 0)) == len(sizes)  # no byte limit: by count, as before


def test_topics_nobody_registers_any_more_expire_with_all_they_hold(
    open_store: Callable[[], Store],
) -> None:
    """A registration dates a topic as in use (to the day); topics not registered since a
    moment are deleted with their bundles and snapshots; those from before dates were
    kept (0) stay; stored_bytes counts what is left."""
    store = open_store()
    day = 86_400.0
    store.register(TOPIC, b"k" * 32, now=10 * day)
    store.register(OTHER, b"o" * 32, now=10 * day)
    third = bytes(range(2, 34))
    store.register(third, b"t" * 32)  # undated
    for topic, n in ((TOPIC, 1), (OTHER, 2), (third, 3)):
        cursor = store.add(topic, bytes([n]), bytes(100 * n)).cursor
        store.add_snapshot(topic, cursor, 0, 0.0)
    store.commit()
    assert store.stored_bytes() == 600
    store.register(OTHER, b"o" * 32, now=10.5 * day)  # the same day: not written again
    store.register(OTHER, b"o" * 32, now=40 * day)  # in use again
    assert store.expire(30 * day) == 1
    assert store.topic(TOPIC) is None
    assert store.after(TOPIC, 0) == []
    assert store.latest_snapshot(TOPIC) is None
    assert store.topic(OTHER) is not None
    assert store.topic(third) is not None
    assert store.stored_bytes() == 500
    assert store.register(TOPIC, b"x" * 32, now=41 * day) is Registered.NEW  # free again


def test_what_came_from_a_peer_is_not_sent_back_to_it(open_store: Callable[[], Store]) -> None:
    store = open_store()
    store.register(TOPIC, b"k" * 32)
    store.add(TOPIC, b"a", b"from a client")
    store.add(TOPIC, b"b", b"from the peer", b"P" * 32)
    store.set_peer_cursor(b"P" * 32, 40)
    store.commit()
    store.set_peer_cursor(b"P" * 32, 12)  # a cursor only moves forward
    store.commit()
    assert [t for _, _, t in store.all_after(0, not_from=b"P" * 32)] == [b"from a client"]
    assert store.count_after(0, not_from=b"P" * 32) == 1
    assert store.peer_cursor(b"P" * 32) == 40
    assert [c.origin for c in store.committed_after(0, None)] == [b"", b"P" * 32]


def test_a_freeze_only_moves_earlier(open_store: Callable[[], Store]) -> None:
    store = open_store()
    store.register(TOPIC, b"k" * 32)
    store.freeze(TOPIC, 100.0)
    store.freeze(TOPIC, 500.0)
    assert _frozen_at(store) == 100.0
    store.freeze(TOPIC, 50.0)
    assert _frozen_at(store) == 50.0


def test_a_bundle_is_stored_the_short_way_only_if_its_topics_row_lets_it_in(
    open_store: Callable[[], Store],
) -> None:
    """add_checked: the row's key, hold, freeze and quota checked by the statement that
    stores; a refusal (or a bundle stored already) stores nothing and leaves no batch open."""
    store = open_store()
    store.register(TOPIC, b"k" * 32)
    ok = TopicChecks(relay_key=b"k" * 32, now=100.0, max_bytes=100, max_bundles=3)
    first = store.add_checked(TOPIC, b"id1", b"a" * 10, ok)
    assert first is not None
    assert first.new
    store.commit()
    refused = [
        store.add_checked(TOPIC, b"id1", b"a" * 10, ok),  # stored already
        store.add_checked(TOPIC, b"id2", b"b" * 10, replace(ok, relay_key=b"x" * 32)),
        store.add_checked(TOPIC, b"id2", b"b" * 91, ok),  # over the bytes quota
        store.add_checked(TOPIC, b"id2", b"b" * 10, replace(ok, max_bundles=1)),
        store.add_checked(OTHER, b"id2", b"b" * 10, ok),  # not registered
    ]
    store.freeze(TOPIC, 150.0)
    refused.append(store.add_checked(TOPIC, b"id2", b"b" * 10, replace(ok, now=150.0)))
    assert refused == [None] * len(refused)
    assert not store.busy()
    assert store.moderate("freeze", TOPIC.hex(), "", 0.0)  # held by the operator
    assert store.add_checked(TOPIC, b"id2", b"b" * 10, ok) is None
    store.moderate("unfreeze", TOPIC.hex(), "", 0.0)
    second = store.add_checked(TOPIC, b"id2", b"b" * 10, ok)  # before the group's freeze
    assert second is not None
    assert second.cursor > first.cursor
    store.commit()
    assert _usage(store) == (20, 2)
    assert store.counts() == (1, 2)


def test_pruning_deletes_superseded_snapshots_and_keeps_every_bundle(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    store.register(TOPIC, b"k" * 32)
    cursors = [store.add(TOPIC, bytes([i]), b"x" * 10).cursor for i in range(5)]
    old = store.add(TOPIC, b"old", b"o" * 10).cursor
    store.add_snapshot(TOPIC, old, cursors[3], now=10.0)
    new = store.add(TOPIC, b"new", b"n" * 10).cursor
    store.add_snapshot(TOPIC, new, old, now=12.0)
    store.commit()
    assert store.prune(older_than=11.0) == 0  # the newer snapshot is not old enough yet
    assert store.prune(older_than=20.0) == 1
    assert store.latest_snapshot(TOPIC) == (new, old)
    assert store.pruned_through(TOPIC) == 0
    assert [c for c, _ in store.after(TOPIC, 0)] == [*cursors, new]
    assert _usage(store) == (60, 6)
    store.add(TOPIC, b"late", b"l")
    with pytest.raises(StorageError, match="waits"):
        store.prune(older_than=20.0)
    store.commit()


def test_topics_are_counted_by_their_relay_key_and_by_the_invite_that_admitted_them(
    open_store: Callable[[], Store],
) -> None:
    """topics_per_key and topics_per_invite read these counts."""
    store = open_store()
    third = bytes(range(2, 34))
    store.register(TOPIC, b"k" * 32, invite="digest one")
    store.register(OTHER, b"k" * 32, invite="digest one")
    store.register(third, b"x" * 32)
    assert store.register(TOPIC, b"k" * 32, invite="digest two") is Registered.KNOWN
    assert store.topics_with_key(b"k" * 32) == 2
    assert store.topics_with_key(b"x" * 32) == 1
    assert store.topics_with_key(b"n" * 32) == 0
    assert store.topics_with_invite("digest one") == 2
    assert store.topics_with_invite("digest two") == 0  # it admitted no new topic
    assert store.counts() == (3, 0)


def test_a_bundle_is_found_by_its_id_and_nothing_at_a_cursor_never_used(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    store.register(TOPIC, b"k" * 32)
    stored = store.add(TOPIC, b"an id", b"sealed")
    store.commit()
    assert store.cursor_of(b"an id") == stored.cursor
    assert store.cursor_of(b"no such id") is None
    assert store.at(stored.cursor + 1000) is None
    assert store.newest(OTHER) == 0
    assert store.latest_snapshot(TOPIC) is None


def test_the_operator_sees_every_topic_and_each_action_in_the_lists_and_the_log(
    open_store: Callable[[], Store],
) -> None:
    """What ``hearth-relay topics``, ``show``, ``freeze``, ``ban`` and ``drop`` read and
    write; an action that changes nothing is not logged."""
    store = open_store()
    key = (b"b" * 32).hex()
    store.register(TOPIC, b"k" * 32, now=100.0)
    store.register(OTHER, b"o" * 32, now=100.0)
    store.add(TOPIC, b"a", b"x" * 10)
    store.commit()
    listed = {t.topic: t for t in store.topic_list()}
    assert set(listed) == {TOPIC, OTHER}
    assert (listed[TOPIC].bytes, listed[TOPIC].bundles) == (10, 1)
    assert listed[TOPIC].first_seen > 0  # the store's own clock, as last_write
    assert listed[TOPIC].last_write >= listed[TOPIC].first_seen
    assert not listed[TOPIC].held
    assert store.moderation_counts() == {}
    assert store.moderate("freeze", TOPIC.hex(), "spam", 5.0)
    assert not store.moderate("freeze", TOPIC.hex(), "again", 5.5)  # held already
    assert store.moderate("ban", key, "abuse", 6.0)
    assert not store.moderate("ban", key, "abuse", 6.5)
    assert store.moderate("drop", OTHER.hex(), "illegal", 7.0)
    assert {t.topic: t.held for t in store.topic_list()} == {TOPIC: True}
    assert sorted(store.moderation_lists()) == [
        ("ban", key, "abuse", 6.0),
        ("drop", OTHER.hex(), "illegal", 7.0),
    ]
    assert store.moderation_log() == [
        (7.0, "drop", OTHER.hex(), "illegal"),
        (6.0, "ban", key, "abuse"),
        (5.0, "freeze", TOPIC.hex(), "spam"),
    ]
    assert store.moderation_log(limit=1) == [(7.0, "drop", OTHER.hex(), "illegal")]
    assert store.moderate("unban", key, "", 8.0)
    assert store.moderation_lists() == [("drop", OTHER.hex(), "illegal", 7.0)]
    assert store.moderation_counts() == {"freeze": 1, "ban": 1, "drop": 1, "unban": 1}


def test_a_store_says_what_it_is_and_that_it_can_be_written(
    open_store: Callable[[], Store], request: pytest.FixtureRequest
) -> None:
    """For /info, /readyz, and whether other processes' commits are watched for."""
    kind = request.node.callspec.params["open_store"]
    store = open_store()
    assert store.kind == kind
    assert store.shared is (kind == "postgresql")
    assert store.writable()
    store.register(TOPIC, b"k" * 32)
    store.add(TOPIC, b"a", b"x")
    assert store.writable()  # a batch being written holds the store, for this process
    store.commit()


async def test_a_store_nobody_else_writes_has_no_commits_to_watch_for(
    open_store: Callable[[], Store],
) -> None:
    """A store shared with other processes wakes its watcher once listening (and at each
    of their commits: test_a_batch_that_stored_a_bundle_wakes_the_other_processes); one
    that is not returns at once without waking anybody."""
    store = open_store()
    woken = asyncio.Event()
    watching = asyncio.create_task(store.watch_commits(woken.set))
    try:
        if store.shared:
            await asyncio.wait_for(woken.wait(), 10)
        else:
            await asyncio.wait_for(watching, 1)
            assert not woken.is_set()
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


def test_every_method_of_the_store_port_is_tested_on_both_stores() -> None:
    """Each port's methods (and the attributes the relay reads) appear in the tests above,
    which run on SQLite and PostgreSQL alike: a method added to a port without a test of
    it fails here."""
    named = {
        node.attr
        for node in ast.walk(ast.parse(Path(__file__).read_text()))
        if isinstance(node, ast.Attribute)
    }
    ports = (
        BundleBatch,
        TopicReads,
        SessionStore,
        PeeringStore,
        SharedStore,
        UpkeepStore,
        OperatorStore,
        Store,
    )
    wanted = set().union(*(port.__abstractmethods__ for port in ports)) | {"kind", "shared"}
    assert wanted == set(Store.__abstractmethods__) | {"kind", "shared"}
    assert sorted(wanted - named) == []


# --- two relay processes on one PostgreSQL store ----------------------------------------


def _core(store: Store) -> RelayCore:
    return RelayCore(RelayConfig(), store, clock=lambda: 0.0)


def _client(core: RelayCore, client: int) -> Connection:
    """A client connected to ``core`` and past the hello: its own side of the connection."""
    assert core.admit(client, f"10.0.0.{client}")
    mine = Connection(Role.CONNECTING)
    for output in core.receive(client, mine.send(Hello(versions=[1], role="node", agent="test"))):
        assert isinstance(output, ToClient)
        mine.receive(core.encode(client, output.frame))
    return mine


def _frames(core: RelayCore, outputs: list[Output], client: int) -> list[object]:
    return [o.frame for o in outputs if isinstance(o, ToClient) and o.client == client]


@pytest.fixture
def two_processes(postgres_url: str) -> Iterator[tuple[RelayCore, RelayCore]]:
    """Two relay cores, each with its own connection to one PostgreSQL store."""
    stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    yield _core(stores[0]), _core(stores[1])
    for store in stores:
        store.close()


def test_two_processes_pass_each_others_bundles_on_in_cursor_order(
    two_processes: tuple[RelayCore, RelayCore],
) -> None:
    one, two = two_processes
    [(keys, envelopes)] = make_pool(groups=1, per_group=4)
    publisher, listener = _client(one, 1), _client(two, 2)
    register = Register(
        topic=keys.topic, relay_key=keys.relay_key.public, proof=registration_proof(keys)
    )
    assert one.receive(1, publisher.send(register)) == []
    two.receive(2, listener.send(Subscribe(topic=keys.topic, after=0)))

    def publish(core: RelayCore, conn: Connection, client: int, n: int) -> list[Output]:
        assert core.receive(client, conn.send(Publish(envelope=envelopes[n - 1]))) == []
        return core.flush()

    acks = _frames(one, publish(one, publisher, 1, 1) + publish(one, publisher, 1, 2), 1)
    assert [type(f) for f in acks] == [Ack, Ack]
    # Process two had not looked yet: its own publish first passes on one's two bundles.
    own = _client(two, 3)
    out = publish(two, own, 3, 3)
    to_listener = _frames(two, out, 2)
    assert [f.cursor for f in to_listener if isinstance(f, Deliver)] == [1, 2, 3]
    assert two.committed_elsewhere() == []  # nothing new since
    # A batch that stores nothing new (a bundle sent again) is acknowledged all the same.
    assert [type(f) for f in _frames(two, publish(two, own, 3, 3), 3)] == [Ack]
    live = _frames(one, one.committed_elsewhere(), 2)
    assert live == []  # process one has no subscriber of its own
    publish(one, publisher, 1, 4)
    later = _frames(two, two.committed_elsewhere(), 2)
    # (the bundle sent again took a cursor number it did not keep: cursors may skip)
    assert [f.envelope for f in later if isinstance(f, Deliver)] == [envelopes[3]]
    assert _frames(two, two.committed_elsewhere(), 3) == []  # the publisher on two, not one


def test_a_backup_carries_a_relay_from_sqlite_to_postgresql_and_back(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite = SqliteStore(tmp_path / "relay.db")
    sqlite.register(TOPIC, b"k" * 32, b"proof", invite="an operator's invite")
    for i in range(300):  # more than one page of the copy
        sqlite.add(TOPIC, i.to_bytes(4, "big"), bytes([i % 256]) * 40)
    sqlite.add(TOPIC, b"from a peer", b"p", b"P" * 32)
    sqlite.add_snapshot(TOPIC, 300, 120, now=5.0)
    sqlite.set_peer_cursor(b"P" * 32, 77)
    sqlite.freeze(TOPIC, 99.0)
    sqlite.commit()
    expected = sqlite.committed_after(0, None, 1000)
    sqlite.close()
    backup_store(tmp_path, tmp_path / "first.db")

    restore_from_file(tmp_path / "first.db", postgres_url)
    with pytest.raises(StorageError, match="empty"):
        restore_from_file(tmp_path / "first.db", postgres_url)
    moved = PostgresStore(postgres_url)
    try:
        assert moved.committed_after(0, None, 1000) == expected  # cursors and all
        assert moved.topic(TOPIC) == TopicState(b"k" * 32, 99.0, 12_001, 301)
        assert moved.latest_snapshot(TOPIC) == (300, 120)
        assert moved.peer_cursor(b"P" * 32) == 77
        assert moved.topics_with_invite("an operator's invite") == 1  # topics_per_invite
        assert moved.add(TOPIC, b"next", b"n").cursor == 302  # numbering goes on from there
        moved.commit()
    finally:
        moved.close()

    backup_to_file(postgres_url, tmp_path / "second.db")
    restore_store(tmp_path / "second.db", tmp_path / "back")
    back = SqliteStore(tmp_path / "back" / "relay.db")
    try:
        assert back.committed_after(0, 301, 1000) == expected
        assert back.registration(TOPIC) == (b"k" * 32, b"proof")
        assert back.topics_with_invite("an operator's invite") == 1
    finally:
        back.close()


def test_a_bundle_stored_again_in_sqlite_uses_up_no_cursor(tmp_path: Path) -> None:
    # A new bundle is one INSERT; one stored already is found by its UNIQUE id after the
    # INSERT fails, which (unlike INSERT OR IGNORE) leaves the next cursor where it was.
    store = SqliteStore(tmp_path / "relay.db")
    store.register(TOPIC, b"k" * 32)
    first = store.add(TOPIC, b"a", b"one")
    assert store.add(TOPIC, b"a", b"one") == Stored(first.cursor, False)
    second = store.add(TOPIC, b"b", b"two")
    store.commit()
    assert second == Stored(first.cursor + 1, True)
    assert store.after(TOPIC, 0) == [(first.cursor, b"one"), (second.cursor, b"two")]
    assert _usage(store) == (6, 2)


async def test_a_batch_that_stored_a_bundle_wakes_the_other_processes(postgres_url: str) -> None:
    """Notified with its commit, in the same round trip (and a batch that stored nothing
    wakes nobody)."""
    writer, watcher = PostgresStore(postgres_url), PostgresStore(postgres_url)
    woken = asyncio.Event()
    watching = asyncio.create_task(watcher.watch_commits(woken.set))
    try:
        await asyncio.wait_for(woken.wait(), 10)  # the first wake: listening now
        woken.clear()
        writer.register(TOPIC, b"k" * 32)
        writer.set_peer_cursor(b"p" * 32, 1)  # a batch storing no bundle
        writer.commit()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(woken.wait(), 0.5)
        writer.add(TOPIC, b"id", b"x")
        writer.commit()
        await asyncio.wait_for(woken.wait(), 10)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        writer.close()
        watcher.close()
