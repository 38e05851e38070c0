"""Signature checks: what every node and relay must agree on, and never crash on."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from hearth.crypto import SigningKey, hkdf, verify


def test_a_signature_verifies_for_its_key_and_message_only() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    signature = key.sign(b"hearth")
    assert verify(key.public, signature, b"hearth")
    assert not verify(other.public, signature, b"hearth")
    assert not verify(key.public, signature, b"hearth!")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify(key.public, flipped, b"hearth")


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (b"", b""),
        (b"k" * 31, b"s" * 64),  # too short: must not read past it
        (b"k" * 33, b"s" * 64),
        (b"k" * 32, b"s" * 63),
        (b"k" * 32, b"s" * 65),
        (bytes(32), bytes(64)),  # a small-order key and an all-zero signature
    ],
)
def test_malformed_keys_and_signatures_are_simply_not_valid(
    public_key: bytes, signature: bytes
) -> None:
    assert verify(public_key, signature, b"message") is False


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=80),
    st.binary(max_size=40),
    st.none() | st.binary(max_size=80),
    st.integers(1, 255 * 32),
)
def test_hkdf_is_rfc_5869s(secret: bytes, info: bytes, salt: bytes | None, length: int) -> None:
    """Hearth's HKDF, written over HMAC for speed, derives what cryptography's does."""
    expected = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info)
    assert hkdf(secret, info, salt=salt, length=length) == expected.derive(secret)
