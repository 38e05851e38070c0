"""Freezing a group's old topic after a removal (SECURITY.md §5): the relay takes no more
bundles for it once the grace period has run, and only the topic's own key can ask."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hearth.group import member_changes
from hearth.net.sync_client import plan_for
from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.protocol.bundle import freeze_proof, registration_proof
from hearth.protocol.frames import PROTOCOL_VERSION, Error, Freeze, Hello, Publish, Register
from hearth.protocol.frames import encode_frame as encode
from hearth.validity.intake import take_in
from relay.config import RelayConfig
from relay.core import Output, RelayCore, ToClient
from relay.sqlite_store import SqliteStore
from tests.peering_simulation import make_pool

KEYS, ENVELOPES = make_pool(groups=1, per_group=4)[0]
OTHER_KEYS = make_pool(groups=2, per_group=1)[1][0]


def relay(now: list[float], grace: float) -> RelayCore:
    core = RelayCore(
        replace(RelayConfig(), freeze_grace_s=grace),
        SqliteStore(Path(":memory:")),
        clock=lambda: now[0],
        wall_clock=lambda: now[0],
    )
    assert core.admit(1, "192.0.2.1")
    for frame in (
        Hello(versions=[PROTOCOL_VERSION], role="node", agent="test"),
        Register(topic=KEYS.topic, relay_key=KEYS.relay_key.public, proof=registration_proof(KEYS)),
    ):
        for out in core.receive(1, encode(frame)):
            assert isinstance(out, ToClient)
            core.encode(1, out.frame)
    return core


def errors(outputs: list[Output]) -> list[str]:
    return [o.frame.code for o in outputs if isinstance(o, ToClient) and isinstance(o.frame, Error)]


def publish(core: RelayCore, envelope: bytes) -> list[str]:
    return errors(core.receive(1, encode(Publish(envelope=envelope))) + core.flush())


def test_a_frozen_topic_takes_bundles_until_the_grace_period_ends() -> None:
    now = [1000.0]
    core = relay(now, grace=60.0)
    assert publish(core, ENVELOPES[0]) == []
    assert errors(core.receive(1, encode(Freeze(topic=KEYS.topic, proof=freeze_proof(KEYS))))) == []
    now[0] += 59
    assert publish(core, ENVELOPES[1]) == []  # a member back from a week away uploads
    now[0] += 2
    assert publish(core, ENVELOPES[2]) == ["topic-frozen"]
    # Asking again later does not give the topic more time.
    core.receive(1, encode(Freeze(topic=KEYS.topic, proof=freeze_proof(KEYS))))
    assert publish(core, ENVELOPES[3]) == ["topic-frozen"]


def test_only_the_topics_own_key_can_ask_for_a_freeze() -> None:
    now = [1000.0]
    core = relay(now, grace=0.0)
    forged = Freeze(topic=KEYS.topic, proof=freeze_proof(OTHER_KEYS))
    assert errors(core.receive(1, encode(forged))) == ["bad-freeze"]
    assert publish(core, ENVELOPES[0]) == []


def test_after_a_removal_the_old_topic_is_asked_to_freeze(tmp_path: Path) -> None:
    for name in ("ada", "ben"):
        create_identity(tmp_path / name, name=name.title())
    with open_node(tmp_path / "ada") as ada, open_node(tmp_path / "ben") as ben:
        group = ada.create_group("Orchard").id
        ben.join_with_token(ada.create_invite())
        for bundle in ben.feeds.all():
            take_in(ada, bundle.envelope, source="test")
        [plan] = plan_for(ada, "ws://relay.test:1", [group])
        assert plan.freeze == b""  # nothing superseded yet
        member_changes.remove_member(ada, group, "Ben")
        plans = {p.topic: p for p in plan_for(ada, "ws://relay.test:1", [group])}
        (_, old), (_, new) = ada.feeds.epochs(group)
        assert plans[old.topic].freeze == freeze_proof(old)
        assert plans[new.topic].freeze == b""
