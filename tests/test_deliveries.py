"""Protocol version 3: a relay sends a catch-up's bundles many to a ``deliveries`` frame,
to a node that speaks it; to an older one (versions 1 and 2), one ``deliver`` each, as
before. Through a real relay process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from hearth.crypto import SigningKey
from hearth.errors import ProtocolError
from hearth.protocol.bundle import EpochKeys, registration_proof
from hearth.protocol.connection import Connection, Role
from hearth.protocol.frames import (
    Ack,
    CaughtUp,
    Deliver,
    Deliveries,
    Frame,
    Hello,
    Publish,
    Register,
    Subscribe,
    Welcome,
    decode_frame,
    encode_frame,
)
from relay.core import DELIVERIES_BYTES
from tests.test_sync_processes import Relay, start_relay

TOPIC = bytes(32)


def test_a_deliveries_frame_goes_and_comes_back_whole() -> None:
    frame = Deliveries(topic=TOPIC, cursors=[3, 4], envelopes=[b"a", b"bb"])
    assert decode_frame(encode_frame(frame)) == frame
    assert frame.each() == [
        Deliver(topic=TOPIC, cursor=3, envelope=b"a"),
        Deliver(topic=TOPIC, cursor=4, envelope=b"bb"),
    ]


@pytest.mark.parametrize(
    ("cursors", "envelopes"),
    [([1, 2], [b"a"]), ([], []), ([-1], [b"a"]), ([True], [b"a"]), ([1], ["text"])],
)
def test_a_malformed_deliveries_frame_is_refused(
    cursors: list[object], envelopes: list[object]
) -> None:
    from hearth.protocol import codec

    body = {"t": "deliveries", "topic": TOPIC, "cursors": cursors, "envelopes": envelopes}
    with pytest.raises(ProtocolError, match="deliveries frame"):
        decode_frame(codec.encode(body))  # type: ignore[arg-type]


def test_no_deliveries_frame_goes_to_a_side_that_speaks_an_older_version() -> None:
    relay = Connection(Role.ACCEPTING)
    relay.receive(encode_frame(Hello(versions=[1, 2], role="node", agent="old")))
    relay.send(Welcome(version=relay.agreed or 0, limits={}))
    frame = Deliveries(topic=TOPIC, cursors=[1], envelopes=[b"a"])
    with pytest.raises(ProtocolError, match="version 2"):
        relay.send(frame)


KEYS = EpochKeys(group_id=bytes(range(32)), epoch_id=bytes(32), secret=bytes(range(1, 33)))


def _bundles(count: int) -> list[bytes]:
    from bench.sync_bench import make_bundles

    return make_bundles(KEYS, SigningKey.generate(), count)


@pytest.fixture
def stocked_relay(tmp_path: Path) -> Iterator[tuple[Relay, list[bytes]]]:
    """A relay holding 250 bundles of one topic (about 2.5 deliveries frames' worth)."""
    relay = start_relay(tmp_path / "relay")
    bundles = _bundles(250)

    async def stock() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.url) as ws:
            await ws.send_bytes(encode_frame(Hello(versions=[3], role="node", agent="t")))
            await ws.receive()
            proof = registration_proof(KEYS)
            await ws.send_bytes(
                encode_frame(
                    Register(topic=KEYS.topic, relay_key=KEYS.relay_key.public, proof=proof)
                )
            )
            for envelope in bundles:
                await ws.send_bytes(encode_frame(Publish(envelope=envelope)))
            acked = 0
            while acked < len(bundles):
                acked += isinstance(decode_frame((await ws.receive()).data), Ack)

    asyncio.run(stock())
    yield relay, bundles
    relay.kill(signal.SIGTERM)


def _catch_up(url: str, versions: list[int]) -> list[Frame]:
    """What a node speaking ``versions`` receives subscribing to the topic from the start."""

    async def run() -> list[Frame]:
        frames: list[Frame] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_bytes(encode_frame(Hello(versions=versions, role="node", agent="t")))
            welcome = decode_frame((await ws.receive()).data)
            assert isinstance(welcome, Welcome)
            assert welcome.version == max(versions)
            await ws.send_bytes(encode_frame(Subscribe(topic=KEYS.topic, after=0)))
            while not isinstance(
                frame := decode_frame((await ws.receive(timeout=20)).data), CaughtUp
            ):
                frames.append(frame)
        return frames

    return asyncio.run(run())


def _carried(frames: list[Frame]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for frame in frames:
        parts = frame.each() if isinstance(frame, Deliveries) else [frame]
        out += [(d.cursor, d.envelope) for d in parts if isinstance(d, Deliver)]
    return out


def test_a_new_node_gets_a_catch_up_in_few_frames_and_an_old_one_bundle_by_bundle(
    stocked_relay: tuple[Relay, list[bytes]],
) -> None:
    relay, bundles = stocked_relay
    new = _catch_up(relay.url, [1, 2, 3])
    old = _catch_up(relay.url, [1, 2])
    assert all(isinstance(f, Deliver) for f in old)
    assert [e for _, e in _carried(old)] == bundles
    # The same bundles at the same cursors, in a handful of frames each within the bound.
    assert _carried(new) == _carried(old)
    assert all(isinstance(f, Deliveries) for f in new)
    expected = -(-sum(map(len, bundles)) // DELIVERIES_BYTES)
    assert expected <= len(new) <= expected + 1
    assert all(
        sum(map(len, f.envelopes)) <= DELIVERIES_BYTES for f in new if isinstance(f, Deliveries)
    )
