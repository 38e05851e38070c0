"""Fuzzing the decoders (SECURITY.md §8): only typed protocol errors, never a crash."""

from __future__ import annotations

import contextlib
import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hearth.crypto import SigningKey
from hearth.errors import FrameTooBig, HearthError, ProtocolError
from hearth.protocol import bundle, codec, frames
from hearth.protocol.bundle import (
    EpochKeys,
    Inner,
    decode_changes,
    decode_snapshot,
    open_envelope,
    parse_envelope,
    seal_bundle,
)
from hearth.protocol.connection import Connection, Role
from hearth.protocol.frames import Ack, Deliver, Publish, decode_frame, encode_frame
from hearth.protocol.invite_token import decode_claim

EXAMPLES = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
DEVICE = SigningKey.generate()
GOOD = seal_bundle(
    Inner(
        kind="content",
        group_id=KEYS.group_id,
        epoch_id=KEYS.epoch_id,
        author=DEVICE.public,
        seq=1,
        prev=b"",
        auth_heads=(),
        created_at=1,
        payload=b"\x04\x00",
    ),
    keys=KEYS,
    device=DEVICE,
    salt=os.urandom(32),
).encode()

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)


@EXAMPLES
@given(st.binary(max_size=4096))
def test_codec_decodes_or_says_why(data: bytes) -> None:
    try:
        value = codec.decode(data)
    except ProtocolError:
        return
    assert codec.decode(codec.encode(value)) == value


# Every line of the codec that round-tripping reaches is reached by 100 examples (traced
# over three seeds, the same 92 lines as 2000); the generator, not the codec, was the cost.
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_codec_round_trips(value: codec.Value) -> None:
    assert codec.decode(codec.encode(value)) == value


@EXAMPLES
@given(st.binary(max_size=2048) | values.map(codec.encode))
def test_frames_decode_or_say_why(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(data)
    with contextlib.suppress(ProtocolError):
        Connection(Role.ACCEPTING).receive(data)


@EXAMPLES
@given(st.binary(max_size=2048) | values.map(codec.encode))
def test_envelopes_and_inner_parts_fail_closed(data: bytes) -> None:
    try:
        envelope = parse_envelope(data)
    except ProtocolError:
        return
    try:
        open_envelope(envelope, KEYS)
    except ProtocolError:
        return
    raise AssertionError("a made-up envelope opened")


@EXAMPLES
@given(st.integers(0, len(GOOD) - 1), st.integers(0, 7))
def test_every_bit_flip_of_a_bundle_fails(position: int, bit: int) -> None:
    flipped = bytearray(GOOD)
    flipped[position] ^= 1 << bit
    try:
        envelope = parse_envelope(bytes(flipped))
        if envelope.relay_signature_valid(KEYS.relay_key.public):
            open_envelope(envelope, KEYS)
        else:
            return
    except ProtocolError:
        return
    raise AssertionError(f"a flip at byte {position} went unnoticed")


@EXAMPLES
@given(st.binary(max_size=1024) | values.map(codec.encode))
def test_payloads_and_claims_fail_closed(data: bytes) -> None:
    for decode in (decode_changes, decode_snapshot, decode_claim):
        with contextlib.suppress(HearthError):
            decode(data)  # type: ignore[operator]


SLICING = settings(max_examples=150, deadline=None)  # each example is cheap; keep the suite fast
edits = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3)


def _edited(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, byte in changes:
        if position < len(out):
            out[position] = byte
    return bytes(out)


@SLICING
@given(
    st.binary(min_size=32, max_size=32), st.integers(0, 2**64 - 1), st.binary(max_size=300), edits
)
def test_deliveries_read_by_slicing_are_those_the_codec_reads(
    topic: bytes, cursor: int, envelope: bytes, changes: list[tuple[int, int]]
) -> None:
    """A catch-up's deliveries are read by slicing: only ever as the general reader
    would read them (anything else is left to it)."""
    body = {"t": "deliver", "topic": topic, "cursor": cursor, "envelope": envelope}
    data = _edited(codec.encode(body), changes)
    sliced = frames._delivery(data)
    if not changes and cursor < 2**63:
        assert sliced == Deliver(topic=topic, cursor=cursor, envelope=envelope)
    if sliced is not None:
        assert sliced == frames._decode_any(data)
        assert encode_frame(sliced) == data


@SLICING
@given(
    st.binary(min_size=31, max_size=33),
    st.integers(-(2**65), 2**65),
    st.binary(max_size=300),
    st.binary(max_size=40),
)
def test_deliveries_and_acks_written_by_hand_are_what_the_codec_writes(
    topic: bytes, cursor: int, envelope: bytes, bundle_id: bytes
) -> None:
    """A relay writes a delivery and an acknowledgement for every bundle it takes in, by
    hand: byte for byte what the general way writes, or what it refuses."""
    for frame, body in (
        (
            Deliver(topic=topic, cursor=cursor, envelope=envelope),
            {"t": "deliver", "topic": topic, "cursor": cursor, "envelope": envelope},
        ),
        (Ack(id=bundle_id, cursor=cursor), {"t": "ack", "id": bundle_id, "cursor": cursor}),
    ):
        try:
            general = codec.encode(body)
        except ProtocolError:
            with pytest.raises(ProtocolError):
                encode_frame(frame)
            continue
        assert encode_frame(frame) == general


def test_a_delivery_over_the_frame_limit_is_refused_as_the_general_way_refuses_it() -> None:
    envelope = bytes(frames.MAX_FRAME - 60)  # fits alone; not with the frame around it
    with pytest.raises(FrameTooBig):
        encode_frame(Deliver(topic=bytes(32), cursor=1, envelope=envelope))


@SLICING
@given(st.binary(max_size=300), st.integers(0, 3), edits)
def test_publishes_read_by_slicing_are_those_the_codec_reads(
    envelope: bytes, covers: int, changes: list[tuple[int, int]]
) -> None:
    """A relay reads a publish for every bundle it takes in by slicing: only ever as the
    general reader would read it (anything else is left to it)."""
    data = _edited(encode_frame(Publish(envelope=envelope, covers=covers)), changes)
    sliced = frames._publish(data)
    if not changes and not covers:
        assert sliced == Publish(envelope=envelope)
    if sliced is not None:
        assert sliced == frames._decode_any(data)


def test_a_delivery_written_unusually_is_read_the_general_way() -> None:
    usual = encode_frame(Deliver(topic=bytes(32), cursor=5, envelope=b"e"))
    at = usual.index(codec.encode(5))
    padded = usual[: at + 1] + bytes([0x0A | 0x80, 0x00]) + usual[at + 2 :]  # 10 in two bytes
    assert frames._delivery(padded) is None
    assert decode_frame(padded) == Deliver(topic=bytes(32), cursor=5, envelope=b"e")


@SLICING
@given(st.sampled_from(bundle.PAD_BUCKETS[:4]), edits)
def test_envelopes_read_by_slicing_are_those_the_codec_reads(
    size: int, changes: list[tuple[int, int]]
) -> None:
    parts = [os.urandom(32), os.urandom(32), os.urandom(size), os.urandom(64)]
    data = _edited(codec.encode([bundle.VERSION, *parts]), changes)
    sliced = bundle._envelope_fields(data)
    if not changes:
        assert sliced == tuple(parts)
    if sliced is not None:
        assert [bundle.VERSION, *sliced] == codec.decode(data)
        envelope = parse_envelope(data)
        assert envelope.encode() == data
        assert envelope.id == hashlib.sha256(codec.encode(codec.decode(data)[:4])).digest()
        associated = [bundle.VERSION, envelope.topic, envelope.salt, len(envelope.ciphertext)]
        assert envelope.associated_data() == codec.encode(associated)
