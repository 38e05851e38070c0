"""Attacks on the relay's conditional insert (``add_checked``) with two relay processes on
one PostgreSQL store: can a client get a bundle stored past a freeze or a quota by racing
the other process?

The cores are the production :class:`~relay.core.RelayCore` on two real connections to one
database, driven by hand as in ``tests/test_relay_stores.py``: the race needs one process
stopped at a known point, which real ``hearth-relay`` processes cannot be. The second
process runs in a thread, as it would run beside the first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hearth.protocol.bundle import EpochKeys, registration_proof
from hearth.protocol.connection import Connection
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    Error,
    Hello,
    Publish,
    Register,
    encode_frame,
)
from relay.config import RelayConfig
from relay.core import Output, RelayCore
from relay.postgres_store import PostgresStore
from relay.storage import TopicState
from tests.peering_simulation import PeeringSimulation, make_pool
from tests.test_relay_stores import _client, _frames


@pytest.fixture
def stores(postgres_url: str) -> Iterator[list[PostgresStore]]:
    """Three connections to one database: two relay processes and an operator's command."""
    opened = [PostgresStore(postgres_url) for _ in range(3)]
    yield opened
    for store in opened:
        store.close()


def _register(core: RelayCore, conn: Connection, client: int, keys: EpochKeys) -> None:
    proof = registration_proof(keys)
    register = Register(topic=keys.topic, relay_key=keys.relay_key.public, proof=proof)
    assert core.receive(client, conn.send(register)) == []


def _publish_beside(
    core: RelayCore, conn: Connection, client: int, envelope: bytes
) -> Callable[[], list[Output]]:
    """Publish on ``core`` in a thread that waits (for the store's write lock) while the
    caller holds the other process's batch open; returns what gives its outputs once the
    thread is through."""
    out: list[Output] = []

    def run() -> None:
        out.extend(core.receive(client, conn.send(Publish(envelope=envelope))))
        out.extend(core.flush())

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)  # it reads the topic's row, then waits for the write lock
    assert thread.is_alive(), "the second process did not wait for the first's batch"

    def result() -> list[Output]:
        thread.join(timeout=10)
        assert not thread.is_alive()
        return out

    return result


def test_a_bundle_racing_a_full_quota_from_another_process_is_refused(
    stores: list[PostgresStore],
) -> None:
    """The quota allows two bundles. Process one holds a batch with the second; process
    two, seeing the topic for the first time, reads its row (one bundle: room) and then
    waits for the write lock. Stored without looking at the row again, its bundle was a
    third, past the quota. It is refused with the quota's reason."""
    config = RelayConfig(topic_quota_bundles=2)
    one = RelayCore(config, stores[0], clock=lambda: 0.0)
    two = RelayCore(config, stores[1], clock=lambda: 0.0)
    [(keys, envelopes)] = make_pool(groups=1, per_group=3)
    first, second = _client(one, 1), _client(two, 2)
    _register(one, first, 1, keys)
    _register(two, second, 2, keys)
    one.receive(1, first.send(Publish(envelope=envelopes[0])))
    assert [type(f) for f in _frames(one, one.flush(), 1)] == [Ack]
    one.receive(1, first.send(Publish(envelope=envelopes[1])))  # batch open: lock held
    later = _publish_beside(two, second, 2, envelopes[2])
    assert [type(f) for f in _frames(one, one.flush(), 1)] == [Ack]
    answers = _frames(two, later(), 2)
    topic = stores[2].topic(keys.topic)
    assert topic is not None
    assert topic.bundles == 2
    assert [(type(f), getattr(f, "code", "")) for f in answers] == [(Error, "quota-exceeded")]


def test_a_bundle_racing_a_freeze_from_another_process_is_refused(
    stores: list[PostgresStore],
) -> None:
    """Process one holds a batch open (another group's bundle). Process two reads the
    topic's row — not frozen — and waits for the write lock; meanwhile the group's freeze
    is committed (the operator's command here). Stored without looking at the row again,
    the bundle went in past the freeze. It is refused as frozen."""
    one = RelayCore(RelayConfig(), stores[0], clock=lambda: 0.0, wall_clock=lambda: 100.0)
    two = RelayCore(RelayConfig(), stores[1], clock=lambda: 0.0, wall_clock=lambda: 100.0)
    [(keys, envelopes), (others, theirs)] = make_pool(groups=2, per_group=1)
    first, second = _client(one, 1), _client(two, 2)
    _register(one, first, 1, others)
    _register(two, second, 2, keys)
    one.receive(1, first.send(Publish(envelope=theirs[0])))  # batch open: lock held
    later = _publish_beside(two, second, 2, envelopes[0])
    stores[2].freeze(keys.topic, 50.0)
    assert [type(f) for f in _frames(one, one.flush(), 1)] == [Ack]
    answers = _frames(two, later(), 2)
    assert stores[2].counts()[1] == 1  # the other group's bundle only
    assert [(type(f), getattr(f, "code", "")) for f in answers] == [(Error, "topic-frozen")]


def test_a_bundle_from_a_peer_racing_a_freeze_is_refused(tmp_path: Path) -> None:
    """Relay one takes a group's bundles from a node and mirrors them to relay two. Relay
    two read the topic's row (not frozen), then stored the bundle with no conditions: a
    freeze committed in between — by another relay process on the same store, played here
    by freezing right after the read — did not count. It is stored by the statement that
    checks the row, as a client's bundle is, and refused as frozen."""
    pool = make_pool(groups=1, per_group=2)
    sim = PeeringSimulation(tmp_path, seed=3, pool=pool)
    keys, envelopes = pool[0]
    sim.link_up((0, 1))
    publisher = 1000
    core = sim.relays[0]
    assert core.admit(publisher, "10.0.0.9")
    hello = Hello(versions=[PROTOCOL_VERSION], role="node", agent="test")
    register = Register(
        topic=keys.topic, relay_key=keys.relay_key.public, proof=registration_proof(keys)
    )
    for frame in (hello, register, Publish(envelope=envelopes[0])):
        sim._carry(0, core.receive(publisher, encode_frame(frame)))
    sim._carry(0, core.flush())
    sim.settle()
    assert envelopes[0] in sim.bundles(1)
    store = sim.stores[1]
    read_row = store.topic

    def read_then_frozen(topic: bytes) -> TopicState | None:
        row = read_row(topic)
        store.freeze(topic, 50.0)  # another process's freeze, committed after the read
        return row

    store.topic = read_then_frozen  # type: ignore[method-assign]
    sim.relays[1].wall_clock = lambda: 100.0
    sim._carry(0, core.receive(publisher, encode_frame(Publish(envelope=envelopes[1]))))
    sim._carry(0, core.flush())
    sim.settle()
    assert envelopes[1] in sim.bundles(0)
    assert envelopes[1] not in sim.bundles(1)
