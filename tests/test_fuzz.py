"""Fuzzing the decoders (SECURITY.md §8): only typed protocol errors, never a crash."""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hearth.crypto import SigningKey
from hearth.errors import HearthError, ProtocolError
from hearth.invite import decode_claim
from hearth.protocol import codec
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
from hearth.protocol.frames import decode_frame

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


@EXAMPLES
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
