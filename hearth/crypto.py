"""Cryptographic primitives Hearth uses, from ``cryptography`` (SECURITY.md §2) — except
checking Ed25519 signatures, which libsodium (PyNaCl) does in half the time; verifying is
most of what a relay does per bundle, and much of what a node does.

Thin, typed wrappers so the rest of the code never touches key classes directly: keys
travel as raw 32-byte strings and ids as hex.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

__all__ = [
    "KemKey",
    "RandomBytes",
    "SigningKey",
    "aead_open",
    "aead_seal",
    "hkdf",
    "key_id",
    "open_sealed",
    "seal_to",
    "verify",
]

RandomBytes = Callable[[int], bytes]
"""Where randomness comes from: ``secrets.token_bytes``, or a seeded source in simulations."""


def key_id(public_key: bytes) -> str:
    """The short, stable id of a public key: 128 bits of its SHA-256, as hex."""
    return hashlib.sha256(public_key).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 key pair: members and devices sign with one."""

    secret: bytes
    _key: Ed25519PrivateKey = field(init=False, repr=False, compare=False)
    public: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = Ed25519PrivateKey.from_private_bytes(self.secret)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "public", key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls, random_bytes: RandomBytes = secrets.token_bytes) -> SigningKey:
        """A fresh random key (any 32 random bytes are an Ed25519 private key)."""
        return cls(random_bytes(32))

    def sign(self, message: bytes) -> bytes:
        """A 64-byte signature over ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:  # never print secrets
        return f"SigningKey(public={self.public.hex()[:16]}…)"


@dataclass(frozen=True, slots=True)
class KemKey:
    """An X25519 key pair: devices receive group secrets sealed to one."""

    secret: bytes

    @classmethod
    def generate(cls, random_bytes: RandomBytes = secrets.token_bytes) -> KemKey:
        """A fresh random key (X25519 clamps any 32 random bytes into one)."""
        return cls(random_bytes(32))

    @property
    def public(self) -> bytes:
        """The 32-byte public key."""
        key = X25519PrivateKey.from_private_bytes(self.secret)
        return key.public_key().public_bytes_raw()

    def __repr__(self) -> str:  # never print secrets
        return f"KemKey(public={self.public.hex()[:16]}…)"


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s signature over ``message``.

    Answers are remembered by the message's digest, not the message (bundles can be
    large): the same signatures are checked again and again (membership cards at every
    judgement, each bundle by every node a simulation runs), and one check costs 0.1-0.25
    ms where hashing the message costs microseconds.
    """
    key = (public_key, signature, hashlib.sha256(message).digest())
    with _verified_lock:
        known = _verified.get(key)
    if known is not None:
        return known
    valid = (
        len(public_key) == 32
        and len(signature) == 64
        and _sodium_valid(public_key, signature, message)
    )
    with _verified_lock:
        _verified[key] = valid
        if len(_verified) > _VERIFIED_MAX:
            del _verified[next(iter(_verified))]  # the oldest
    return valid


def _sodium_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    # libsodium's rules are strict (canonical encodings, no small-order points): every
    # node checks alike because every node uses them.
    try:
        crypto_sign_open(signature + message, public_key)
    except BadSignatureError:
        return False
    return True


_VERIFIED_MAX = 8192
_verified: dict[tuple[bytes, bytes, bytes], bool] = {}
_verified_lock = threading.Lock()


_ZERO_NONCE = bytes(12)  # every key below encrypts exactly one message
_SHA256_BYTES = 32
_SEAL_INFO = b"hearth/v1/seal"


def hkdf(secret: bytes, info: bytes, *, salt: bytes | None = None, length: int = 32) -> bytes:
    """HKDF-SHA256 of ``secret`` for one purpose named by ``info`` (RFC 5869).

    Written out over HMAC rather than through ``cryptography``'s HKDF object, which costs
    several times as much to set up as the two HMACs it computes: every bundle opened
    derives its own key (a catch-up opens thousands). tests/test_crypto.py holds it to
    that HKDF's output."""
    if not 0 < length <= 255 * _SHA256_BYTES:
        raise ValueError(f"HKDF cannot derive {length} bytes.")
    key = hmac.digest(salt if salt is not None else bytes(_SHA256_BYTES), secret, "sha256")
    out, block = b"", b""
    for counter in range(1, -(-length // _SHA256_BYTES) + 1):
        block = hmac.digest(key, block + info + bytes((counter,)), "sha256")
        out += block
    return out[:length]


def aead_seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """ChaCha20-Poly1305 with a zero nonce: ``key`` must never encrypt anything else."""
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, associated)


def aead_open(key: bytes, ciphertext: bytes, associated: bytes) -> bytes | None:
    """The plaintext, or ``None`` if the ciphertext or its associated data was altered."""
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, associated)
    except (InvalidTag, ValueError):
        return None


def seal_to(
    recipient: bytes, plaintext: bytes, random_bytes: RandomBytes = secrets.token_bytes
) -> bytes:
    """Encrypt to an X25519 public key, anonymously (age-style): ephemeral key + ciphertext."""
    ephemeral = X25519PrivateKey.from_private_bytes(random_bytes(32))
    ephemeral_pk = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    key = hkdf(shared, _SEAL_INFO + ephemeral_pk + recipient)
    return ephemeral_pk + aead_seal(key, plaintext, b"")


def open_sealed(kem: KemKey, sealed: bytes) -> bytes | None:
    """Open what :func:`seal_to` sealed to this key, or ``None`` if it was not for us."""
    if len(sealed) < 32 + 16:
        return None
    ephemeral_pk, body = sealed[:32], sealed[32:]
    try:
        shared = X25519PrivateKey.from_private_bytes(kem.secret).exchange(
            X25519PublicKey.from_public_bytes(ephemeral_pk)
        )
    except ValueError:
        return None
    return aead_open(hkdf(shared, _SEAL_INFO + ephemeral_pk + kem.public), body, b"")
