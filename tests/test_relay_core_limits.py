"""Limits the relay's core decides without I/O (relay/core.py): close codes chosen by the
error's type, the handshake ending at welcome, the relay-wide byte limit."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hearth.protocol import codec
from hearth.protocol.bundle import registration_proof
from hearth.protocol.connection import CLOSE_PROTOCOL, CLOSE_TOO_BIG
from hearth.protocol.frames import MAX_FRAME, Ack, Error, Hello, Publish, Register, encode_frame
from relay.config import RelayConfig
from relay.core import CloseClient, Output, RelayCore, ToClient
from relay.metrics import Metrics
from relay.sqlite_store import SqliteStore
from tests.peering_simulation import make_pool

[(KEYS, BUNDLES)] = make_pool(groups=1, per_group=6, extra_bytes=1000, seed=3)


def _core(tmp_path: Path, **settings: int) -> RelayCore:
    return RelayCore(RelayConfig(**settings), SqliteStore(tmp_path / "r.db"), clock=lambda: 0.0)


def _hello(core: RelayCore, client: int) -> None:
    core.admit(client, f"10.0.0.{client}")
    for out in core.receive(client, encode_frame(Hello(versions=[1], role="node", agent="t"))):
        assert isinstance(out, ToClient)
        core.encode(client, out.frame)


def test_close_codes_follow_the_error_not_its_wording(tmp_path: Path) -> None:
    core = _core(tmp_path)
    _hello(core, 1)
    [too_big] = core.receive(1, bytes(MAX_FRAME + 1))
    assert isinstance(too_big, CloseClient)
    assert too_big.code == CLOSE_TOO_BIG
    _hello(core, 2)
    # A malformed frame whose complaint mentions "limits" is not too big.
    welcome_body = {"t": "welcome", "version": 1, "limits": {"x": "not a number"}}
    [malformed] = core.receive(2, codec.encode(welcome_body))
    assert isinstance(malformed, CloseClient)
    assert "limits" in malformed.reason
    assert malformed.code == CLOSE_PROTOCOL


def test_the_handshake_ends_when_the_welcome_is_decided(tmp_path: Path) -> None:
    """The relay's reader times out a client until its handshake is done; a client's
    hello is answered at once, though the writer sends the welcome a moment later: a
    client idle after its hello is not one that failed to say it."""
    core = _core(tmp_path)
    core.admit(1, "10.0.0.1")
    assert not core.handshaken(1)
    core.receive(1, encode_frame(Hello(versions=[1], role="node", agent="t")))
    assert core.handshaken(1)  # before the welcome is encoded by the writer


def test_past_the_relay_wide_byte_limit_bundles_are_refused_as_relay_full(
    tmp_path: Path,
) -> None:
    size = len(BUNDLES[0])
    core = _core(tmp_path, max_stored_bytes=3 * size + size // 2)
    _hello(core, 1)
    proof = registration_proof(KEYS)
    register = Register(topic=KEYS.topic, relay_key=KEYS.relay_key.public, proof=proof)
    assert core.receive(1, encode_frame(register)) == []

    def answers(outputs: list[Output]) -> list[str]:
        return [
            o.frame.code if isinstance(o.frame, Error) else "ack"
            for o in outputs
            if isinstance(o, ToClient) and isinstance(o.frame, (Ack, Error))
        ]

    got: list[str] = []
    for envelope in BUNDLES[:5]:
        got += answers(core.receive(1, encode_frame(Publish(envelope=envelope))))
        got += answers(core.flush())
    assert got == ["ack"] * 3 + ["relay-full"] * 2
    # A bundle stored already is acknowledged again (a node that missed its ack).
    again = core.receive(1, encode_frame(Publish(envelope=BUNDLES[0]))) + core.flush()
    assert answers(again) == ["ack"]


def test_metrics_are_written_by_prometheus_client_with_every_digit() -> None:
    metrics = Metrics()
    metrics.count("hearth_relay_bytes_out_total", 1234567)
    metrics.count("hearth_relay_rejections_total", reason='odd "reason"\n')
    metrics.gauge("hearth_relay_connections", 3)
    text = metrics.render().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("hearth_relay_bytes_out_total", ())] == 1234567  # not 1.23457e+06
    assert samples[("hearth_relay_rejections_total", (("reason", 'odd "reason"\n'),))] == 1
    assert "# HELP hearth_relay_connections Connections open now." in text
