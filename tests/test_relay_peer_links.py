"""The peer-relay link in :class:`~relay.core.RelayCore`, one rule at a time: who may peer,
what a peer's bad bundles get, and how a fast peer is slowed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hearth.crypto import SigningKey
from hearth.errors import ConfigError, StorageError
from hearth.protocol.bundle import registration_proof
from hearth.protocol.connection import CLOSE_POLICY, CLOSE_PROTOCOL
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    Deliver,
    Hello,
    Mirror,
    Peer,
    Register,
    Welcome,
    encode_frame,
)
from relay.config import RelayConfig
from relay.core import CloseClient, MirrorCatchUp, Output, Pause, RelayCore, ToClient
from relay.identity import acceptor_proof, load_or_create, peer_proof
from relay.sqlite_store import SqliteStore
from tests.peering_simulation import forged, make_pool

POOL = make_pool(groups=1, per_group=5)
KEYS, ENVELOPES = POOL[0]
DIALER = SigningKey(bytes(range(32)))


def acceptor(**settings: object) -> RelayCore:
    config = replace(RelayConfig(accept_peers=(DIALER.public.hex(),)), **settings)
    return RelayCore(config, SqliteStore(Path(":memory:")), clock=lambda: 0.0)


def handshake(core: RelayCore, key: SigningKey = DIALER, client: int = 1) -> list[Output]:
    """A peer dials ``core`` as ``key``: hello, then its proof; what the core answers."""
    assert core.admit(client, "192.0.2.1")
    hello = Hello(versions=[PROTOCOL_VERSION], role="relay", agent="test")
    [welcome] = core.receive(client, encode_frame(hello))
    assert isinstance(welcome, ToClient)
    core.encode(client, welcome.frame)
    challenge = welcome.frame.challenge  # type: ignore[union-attr]
    proof = peer_proof(key, challenge, core.identity.public)
    return core.receive(client, encode_frame(Peer(relay_id=key.public, proof=proof)))


def delivered(core: RelayCore, client: int, envelope: bytes, cursor: int) -> list[Output]:
    out = core.receive(
        client, encode_frame(Deliver(topic=KEYS.topic, cursor=cursor, envelope=envelope))
    )
    return out + core.flush()


def test_an_accepted_peer_is_asked_for_what_it_has_and_may_mirror() -> None:
    core = acceptor()
    [ask] = handshake(core)
    assert isinstance(ask, ToClient)
    assert ask.frame == Mirror(after=0)
    core.encode(1, ask.frame)
    assert core.receive(1, encode_frame(Mirror(after=0))) == [MirrorCatchUp(1, 0)]


def test_a_relay_not_accepted_or_with_a_bad_proof_is_closed() -> None:
    stranger = SigningKey(bytes(32))
    [refused] = handshake(acceptor(), key=stranger)
    assert isinstance(refused, CloseClient)
    assert refused.code == CLOSE_POLICY
    core = acceptor()
    assert core.admit(1, "192.0.2.1")
    [welcome] = core.receive(1, encode_frame(Hello(versions=[1], role="relay", agent="t")))
    core.encode(1, welcome.frame)  # type: ignore[union-attr]
    wrong = peer_proof(DIALER, b"another challenge", core.identity.public)
    [closed] = core.receive(1, encode_frame(Peer(relay_id=DIALER.public, proof=wrong)))
    assert isinstance(closed, CloseClient)
    assert core.metrics.value("hearth_relay_rejections_total", reason="peer_refused") == 1


def test_mirroring_before_proving_who_it_is_closes_the_link() -> None:
    core = acceptor()
    assert core.admit(1, "192.0.2.1")
    [welcome] = core.receive(1, encode_frame(Hello(versions=[1], role="relay", agent="t")))
    core.encode(1, welcome.frame)  # type: ignore[union-attr]
    [closed] = core.receive(1, encode_frame(Mirror(after=0)))
    assert isinstance(closed, CloseClient)
    assert not core.handshaken(1)


def dial(dialer: RelayCore, other: RelayCore, expected: bytes, client: int = 1) -> list[Output]:
    """``dialer`` dials ``other``, expecting relay ``expected`` there: what the dialer does
    with the welcome it gets."""
    [hello] = dialer.dial(client, "peer ws://192.0.2.9", expected)
    assert isinstance(hello, ToClient)
    assert other.admit(client, "192.0.2.1")
    [welcome] = other.receive(client, dialer.encode(client, hello.frame))
    assert isinstance(welcome, ToClient)
    return dialer.receive(client, other.encode(client, welcome.frame))


def test_the_dialing_relay_checks_that_the_relay_it_dials_proves_the_agreed_id() -> None:
    honest = acceptor()
    dialer = acceptor(accept_peers=())
    answer = dial(dialer, honest, honest.identity.public)
    assert [type(o.frame) for o in answer if isinstance(o, ToClient)] == [Peer, Mirror]
    assert dialer.peer_of(1) == honest.identity.public


def test_a_relay_answering_with_another_id_than_agreed_is_refused_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dialer = acceptor(accept_peers=())
    [refused] = dial(dialer, acceptor(), SigningKey(bytes(32)).public)
    assert isinstance(refused, CloseClient)
    assert refused.code == CLOSE_POLICY
    assert not dialer.peer_of(1)
    assert dialer.metrics.value("hearth_relay_rejections_total", reason="peer_wrong_id") == 1
    assert "answers as relay" in caplog.text


def test_a_relay_claiming_another_relays_id_without_its_key_is_refused() -> None:
    honest, liar = acceptor(), acceptor()
    dialer = acceptor(accept_peers=())
    [hello] = dialer.dial(1, "peer ws://192.0.2.9", honest.identity.public)
    dialer.encode(1, hello.frame)  # type: ignore[union-attr]
    nonce = hello.frame.nonce  # type: ignore[union-attr]
    for proof in (b"", acceptor_proof(liar.identity, nonce, bytes(32))):
        claim = Welcome(
            version=PROTOCOL_VERSION,
            limits={},
            challenge=bytes(32),
            relay_id=honest.identity.public,  # the honest relay's id, and the liar's key
            proof=proof,
        )
        outputs = dialer.receive(1, encode_frame(claim))
        assert [type(o) for o in outputs] == [CloseClient]
        assert not dialer.peer_of(1)
        dialer.gone(1)
        [hello] = dialer.dial(1, "peer ws://192.0.2.9", honest.identity.public)
        dialer.encode(1, hello.frame)  # type: ignore[union-attr]
        nonce = hello.frame.nonce  # type: ignore[union-attr]
    rejected = dialer.metrics.value
    assert rejected("hearth_relay_rejections_total", reason="peer_unproven") == 1
    assert rejected("hearth_relay_rejections_total", reason="peer_bad_proof") == 1
    # An honest relay's proof for one dial is no proof on another (a fresh nonce each time).
    [hello] = dialer.dial(2, "peer ws://192.0.2.9", honest.identity.public)
    assert honest.admit(2, "192.0.2.1")
    [welcome] = honest.receive(2, dialer.encode(2, hello.frame))
    [refused] = dialer.receive(1, honest.encode(2, welcome.frame))  # type: ignore[union-attr]
    assert isinstance(refused, CloseClient)


def test_a_second_link_with_the_same_relay_is_refused() -> None:
    core = acceptor()
    handshake(core, client=1)
    [refused] = handshake(core, client=2)
    assert isinstance(refused, CloseClient)


def test_a_peers_bad_bundles_are_refused_and_its_good_ones_kept_on_the_same_link() -> None:
    core = acceptor()
    handshake(core)
    register = Register(
        topic=KEYS.topic, relay_key=KEYS.relay_key.public, proof=registration_proof(KEYS)
    )
    assert core.receive(1, encode_frame(register)) == []
    for cursor, envelope in enumerate([forged(ENVELOPES[0]), b"not an envelope", ENVELOPES[1]], 1):
        outputs = delivered(core, 1, envelope, cursor)
        assert not any(isinstance(o, CloseClient) for o in outputs)
    assert core.store.counts() == (1, 1)
    assert core.store.peer_cursor(DIALER.public) == 3  # past the bad ones: they never improve
    assert core.metrics.value("hearth_relay_rejections_total", reason="bad-signature") == 1
    assert core.metrics.value("hearth_relay_rejections_total", reason="bad_envelope") == 1


def test_a_bundle_for_a_topic_never_registered_is_not_stored() -> None:
    core = acceptor()
    handshake(core)
    delivered(core, 1, ENVELOPES[0], 1)
    assert core.store.counts() == (0, 0)
    assert core.metrics.value("hearth_relay_rejections_total", reason="unknown-topic") == 1


def test_a_peer_over_its_rate_is_read_more_slowly_and_loses_nothing() -> None:
    core = acceptor(peer_publish_per_s=10.0, peer_publish_burst=2)
    handshake(core)
    register = Register(
        topic=KEYS.topic, relay_key=KEYS.relay_key.public, proof=registration_proof(KEYS)
    )
    core.receive(1, encode_frame(register))
    pauses = [
        o
        for i, e in enumerate(ENVELOPES, 1)
        for o in delivered(core, 1, e, i)
        if isinstance(o, Pause)
    ]
    assert pauses
    assert all(p.seconds == 0.1 for p in pauses)
    assert core.store.counts() == (1, len(ENVELOPES))


def test_the_relay_identity_is_kept_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    first = load_or_create(tmp_path)
    assert load_or_create(tmp_path).public == first.public
    assert (tmp_path / "relay.key").stat().st_mode & 0o077 == 0
    (tmp_path / "relay.key").write_bytes(b"short")
    with pytest.raises(ConfigError, match="damaged"):
        load_or_create(tmp_path)


def test_a_cursor_no_store_holds_is_a_protocol_error_and_leaves_no_transaction_open() -> None:
    core = acceptor()
    handshake(core)
    [closed] = delivered(core, 1, ENVELOPES[0], 2**63)
    assert isinstance(closed, CloseClient)
    assert closed.code == CLOSE_PROTOCOL
    assert core.store.peer_cursor(DIALER.public) == 0
    store = SqliteStore(Path(":memory:"))  # and the store itself, asked to keep one
    with pytest.raises(StorageError):
        store.set_peer_cursor(DIALER.public, 2**63)
    assert not store._db.in_transaction


class _ReadFails(SqliteStore):
    def peer_cursor(self, peer: bytes) -> int:
        raise StorageError("The relay could not read a peer's progress (disk I/O error).")


def test_a_store_failure_on_a_peer_link_closes_that_link_and_nothing_else() -> None:
    config = RelayConfig(accept_peers=(DIALER.public.hex(),))
    core = RelayCore(config, _ReadFails(Path(":memory:")), clock=lambda: 0.0)
    [closed] = handshake(core)
    assert isinstance(closed, CloseClient)
    assert closed.code == CLOSE_POLICY


def test_a_peer_asks_for_one_mirror_catch_up_per_link() -> None:
    core = acceptor()
    [ask] = handshake(core)
    core.encode(1, ask.frame)  # type: ignore[union-attr]
    assert core.receive(1, encode_frame(Mirror(after=0))) == [MirrorCatchUp(1, 0)]
    [closed] = core.receive(1, encode_frame(Mirror(after=0)))
    assert isinstance(closed, CloseClient)
    assert closed.code == CLOSE_PROTOCOL
    assert core.metrics.value("hearth_relay_rejections_total", reason="peer_mirror_again") == 1


def test_a_peer_registering_faster_than_its_rate_is_read_more_slowly() -> None:
    core = acceptor(peer_publish_per_s=10.0, peer_publish_burst=2)
    handshake(core)
    keys = [k for k, _ in make_pool(groups=4, per_group=1, seed=5)]
    outputs = [
        o
        for k in keys
        for o in core.receive(
            1,
            encode_frame(
                Register(topic=k.topic, relay_key=k.relay_key.public, proof=registration_proof(k))
            ),
        )
    ]
    assert [o for o in outputs if isinstance(o, Pause)] == [Pause(1, 0.1), Pause(1, 0.1)]
    assert core.store.counts()[0] == 4  # slowed, and nothing refused
