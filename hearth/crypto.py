"""Cryptographic primitives Hearth uses, all from ``cryptography`` (SECURITY.md §2).

Thin, typed wrappers so the rest of the code never touches key classes directly: keys
travel as raw 32-byte strings and ids as hex.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

__all__ = [
    "KemKey",
    "SigningKey",
    "key_id",
    "verify",
]


def key_id(public_key: bytes) -> str:
    """The short, stable id of a public key: 128 bits of its SHA-256, as hex."""
    return hashlib.sha256(public_key).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 key pair: members and devices sign with one."""

    secret: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        raw = Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        return cls(raw)

    @property
    def public(self) -> bytes:
        """The 32-byte public key."""
        key = Ed25519PrivateKey.from_private_bytes(self.secret)
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte signature over ``message``."""
        return Ed25519PrivateKey.from_private_bytes(self.secret).sign(message)

    def __repr__(self) -> str:  # never print secrets
        return f"SigningKey(public={self.public.hex()[:16]}…)"


@dataclass(frozen=True, slots=True)
class KemKey:
    """An X25519 key pair: devices receive group secrets sealed to one."""

    secret: bytes

    @classmethod
    def generate(cls) -> KemKey:
        """A fresh random key."""
        raw = X25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        return cls(raw)

    @property
    def public(self) -> bytes:
        """The 32-byte public key."""
        key = X25519PrivateKey.from_private_bytes(self.secret)
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def __repr__(self) -> str:  # never print secrets
        return f"KemKey(public={self.public.hex()[:16]}…)"


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s signature over ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
