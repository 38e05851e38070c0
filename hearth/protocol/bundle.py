"""Bundles: the encrypted, signed unit of sync (SECURITY.md §3–§4).

An **envelope** is what relays store and forward: version, topic id, salt, ciphertext and
a relay-admission signature. Its id (``SHA-256`` of everything but that signature) is the
de-duplication key everywhere. Inside the ciphertext, padded to a fixed set of sizes, is
the **inner bundle**: which group and epoch, which device wrote it, its place in that
device's feed (seq and the previous bundle's id), a payload, and the device's signature
over all of it plus the topic and salt.

Everything here is pure: keys and randomness come in as arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from hearth.crypto import SigningKey, aead_open, aead_seal, hkdf, verify
from hearth.errors import Damaged, ProtocolError
from hearth.protocol import codec

__all__ = [
    "MAX_BUNDLE",
    "PAD_BUCKETS",
    "Envelope",
    "EpochKeys",
    "Inner",
    "cover_proof",
    "cover_valid",
    "decode_changes",
    "decode_snapshot",
    "encode_changes",
    "encode_snapshot",
    "freeze_proof",
    "freeze_valid",
    "open_envelope",
    "parse_envelope",
    "peer_proof",
    "peer_proof_valid",
    "registration_proof",
    "registration_valid",
    "seal_bundle",
]

VERSION = 1
MAX_BUNDLE = 1024 * 1024
# 512 B … 1 MiB: doublings, and from 64 KiB on quarter steps too, so that a large bundle
# (a snapshot) is padded by at most a quarter of its size rather than nearly doubled.
PAD_BUCKETS = tuple(
    sorted(
        {512 * 2**i for i in range(12)} | {q * 2**k // 4 for k in range(16, 20) for q in (5, 6, 7)}
    )
)
_AEAD_TAG = 16
_SIGNED = b"hearth/v1/bundle\x00"
_RELAY_SIGNED = b"hearth/v1/relay-admission\x00"
_REGISTER_SIGNED = b"hearth/v1/register\x00"
_COVERS_SIGNED = b"hearth/v1/snapshot-covers\x00"
_PEER_SIGNED = b"hearth/v1/peer\x00"
_FREEZE_SIGNED = b"hearth/v1/freeze\x00"


def freeze_proof(keys: EpochKeys) -> bytes:
    """The relay key's word that its topic is superseded by a newer epoch's."""
    return keys.relay_key.sign(_FREEZE_SIGNED + keys.topic)


def freeze_valid(topic: bytes, relay_key: bytes, proof: bytes) -> bool:
    """Whether a freeze request is signed by the topic's relay key."""
    return verify(relay_key, proof, _FREEZE_SIGNED + topic)


def registration_proof(keys: EpochKeys) -> bytes:
    """The relay key's proof, for a relay, that it may register this epoch's topic."""
    relay_key = keys.relay_key
    return relay_key.sign(_REGISTER_SIGNED + keys.topic + relay_key.public)


def cover_proof(keys: EpochKeys, bundle_id: bytes, covers: int) -> bytes:
    """The relay key's statement that a snapshot holds everything up to a cursor."""
    return keys.relay_key.sign(_COVERS_SIGNED + bundle_id + covers.to_bytes(8, "big"))


def cover_valid(relay_key: bytes, bundle_id: bytes, covers: int, proof: bytes) -> bool:
    """Whether a snapshot's cover statement is signed by the topic's relay key."""
    if not 0 <= covers < 2**63:
        return False
    return verify(relay_key, proof, _COVERS_SIGNED + bundle_id + covers.to_bytes(8, "big"))


def peer_proof(keys: EpochKeys, challenge: bytes) -> bytes:
    """Proof, for a peer node, that we hold this epoch's secret: the relay key's signature
    over the peer's fresh challenge, so it cannot be replayed from a relay registration."""
    return keys.relay_key.sign(_PEER_SIGNED + challenge + keys.topic)


def peer_proof_valid(relay_key: bytes, challenge: bytes, topic: bytes, proof: bytes) -> bool:
    """Whether a peer's registration answers our challenge for this topic."""
    return verify(relay_key, proof, _PEER_SIGNED + challenge + topic)


def registration_valid(topic: bytes, relay_key: bytes, proof: bytes) -> bool:
    """Whether a topic registration is signed by the relay key it names."""
    return verify(relay_key, proof, _REGISTER_SIGNED + topic + relay_key)


@lru_cache(maxsize=256)
def _derived(group_id: bytes, secret: bytes) -> tuple[bytes, SigningKey, bytes]:
    """An epoch's topic, relay key and LAN key. Remembered: a node reads its epochs from
    the store for almost every bundle it takes in, and deriving a signing key is slow."""
    return (
        hkdf(secret, b"hearth/v1/topic" + group_id),
        SigningKey(hkdf(secret, b"hearth/v1/relay-auth")),
        hkdf(secret, b"hearth/v1/lan"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochKeys:
    """Everything derived from one epoch's secret (SECURITY.md §3)."""

    group_id: bytes
    epoch_id: bytes
    secret: bytes
    topic: bytes = field(init=False, compare=False)  # what relays know the group by
    relay_key: SigningKey = field(init=False, compare=False)  # admits bundles at relays
    lan_key: bytes = field(init=False, compare=False)  # behind LAN discovery beacons

    def __post_init__(self) -> None:
        topic, relay_key, lan_key = _derived(self.group_id, self.secret)
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "relay_key", relay_key)
        object.__setattr__(self, "lan_key", lan_key)

    def bundle_key(self, salt: bytes) -> bytes:
        """The one-use key of the bundle with this salt."""
        return hkdf(self.secret, b"hearth/v1/bundle" + self.group_id + self.epoch_id, salt=salt)

    def __repr__(self) -> str:  # never print the secret
        return f"EpochKeys(epoch={self.epoch_id.hex()[:12]})"


@dataclass(frozen=True, kw_only=True)  # no slots: ``id`` is cached on the instance
class Envelope:
    """The outer bundle, as relays see it."""

    topic: bytes
    salt: bytes
    ciphertext: bytes
    relay_sig: bytes

    @cached_property
    def id(self) -> bytes:
        """The bundle id: SHA-256 of the envelope without its relay signature."""
        return hashlib.sha256(self._unsigned()).digest()

    def _unsigned(self) -> bytes:
        return _envelope_bytes(_HEAD_UNSIGNED, self.topic, self.salt, self.ciphertext)

    def associated_data(self) -> bytes:
        """The outer fields the AEAD binds the inner bundle to."""
        return _associated(self.topic, self.salt, len(self.ciphertext))

    def encode(self) -> bytes:
        """The envelope's wire bytes."""
        signature = codec.bytes_head(len(self.relay_sig)) + self.relay_sig
        return _envelope_bytes(_HEAD_SIGNED, self.topic, self.salt, self.ciphertext) + signature

    def relay_signature_valid(self, relay_public_key: bytes) -> bool:
        """Whether the relay-admission signature is by this topic's relay key."""
        return verify(relay_public_key, self.relay_sig, _RELAY_SIGNED + self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    """The inner bundle: who wrote it, where it sits in their feed, and what it carries."""

    kind: str  # "content" (Automerge changes) or "snapshot"
    group_id: bytes
    epoch_id: bytes
    author: bytes  # the device's Ed25519 public key
    seq: int
    prev: bytes  # id of the author's previous bundle in this group; b"" for seq 1
    auth_heads: tuple[bytes, ...]
    created_at: int  # for display only; never decides anything
    payload: bytes
    claim: bytes = b""  # a joining device's signed claim to an invite, on its first bundle

    def fields(self) -> list[codec.Value]:
        """The signed fields, in order."""
        return [
            self.kind,
            self.group_id,
            self.epoch_id,
            self.author,
            self.seq,
            self.prev,
            list(self.auth_heads),
            self.created_at,
            self.payload,
            self.claim,
        ]


# An envelope is the list [VERSION, topic, salt, ciphertext, relay signature], its id that
# list less the signature. Both are written by hand here, byte for byte as codec.encode
# would write them (tests/test_bundles.py holds them to it): each bundle that arrives is
# parsed, and its id and bytes asked for, on the path a catch-up of thousands takes.
_HEAD_SIGNED = codec.encode([VERSION, None, None, None, None])[:-4]
_HEAD_UNSIGNED = codec.encode([VERSION, None, None, None])[:-3]
_HEAD_32 = codec.bytes_head(32)
_HEAD_64 = codec.bytes_head(64)
_BYTES_TAG = codec.bytes_head(0)[:1]


def _leading(head: bytes, topic: bytes, salt: bytes) -> bytes:
    """A list's head and its first items, topic and salt, as codec.encode writes them."""
    return b"".join((head, codec.bytes_head(len(topic)), topic, codec.bytes_head(len(salt)), salt))


def _envelope_bytes(head: bytes, topic: bytes, salt: bytes, ciphertext: bytes) -> bytes:
    return b"".join((_leading(head, topic, salt), codec.bytes_head(len(ciphertext)), ciphertext))


def _envelope_fields(data: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """Topic, salt, ciphertext and relay signature of an envelope written exactly as
    :meth:`Envelope.encode` writes one (32-byte topic and salt, 64-byte signature), read
    by slicing; ``None`` for anything else, which :func:`codec.decode` then judges."""
    start = len(_HEAD_SIGNED)
    if data[:start] != _HEAD_SIGNED or data[start : start + 2] != _HEAD_32:
        return None
    if data[start + 34 : start + 36] != _HEAD_32:
        return None
    topic, salt = data[start + 2 : start + 34], data[start + 36 : start + 68]
    at = start + 68
    found = codec.read_uvarint(data, at + 1)
    if data[at : at + 1] != _BYTES_TAG or found is None:
        return None
    length, at = found
    if at + length + 66 != len(data) or data[at + length : at + length + 2] != _HEAD_64:
        return None
    return topic, salt, data[at : at + length], data[at + length + 2 :]


def _associated(topic: bytes, salt: bytes, length: int) -> bytes:
    # codec.encode([VERSION, topic, salt, length]), written as the envelope's id is
    return _leading(_HEAD_UNSIGNED, topic, salt) + codec.encode(length)


def _pad(body: bytes) -> bytes:
    framed = len(body).to_bytes(4, "big") + body
    for bucket in PAD_BUCKETS:
        if len(framed) + _AEAD_TAG <= bucket:
            return framed + bytes(bucket - _AEAD_TAG - len(framed))
    raise ProtocolError("A bundle is larger than the 1 MiB limit; send fewer changes in it.")


def seal_bundle(inner: Inner, *, keys: EpochKeys, device: SigningKey, salt: bytes) -> Envelope:
    """Sign the inner bundle as ``device``, encrypt it, and sign the envelope for relays."""
    if device.public != inner.author:
        raise ProtocolError("A bundle must be signed by the device it names as its author.")
    topic = keys.topic
    signed = codec.encode(inner.fields())
    signature = device.sign(_SIGNED + topic + salt + signed)
    plaintext = _pad(codec.encode([signed, signature]))
    associated = _associated(topic, salt, len(plaintext) + _AEAD_TAG)
    ciphertext = aead_seal(keys.bundle_key(salt), plaintext, associated)
    unsigned = Envelope(topic=topic, salt=salt, ciphertext=ciphertext, relay_sig=b"")
    relay_sig = keys.relay_key.sign(_RELAY_SIGNED + unsigned.id)
    return Envelope(topic=topic, salt=salt, ciphertext=ciphertext, relay_sig=relay_sig)


def parse_envelope(data: bytes) -> Envelope:
    """Check an envelope's size and format (the first, cheapest check); :class:`Damaged`
    if it fails."""
    if len(data) > MAX_BUNDLE + 256:
        raise Damaged("The bundle is larger than the 1 MiB limit.")
    data = bytes(data)
    sliced = _envelope_fields(data)
    if sliced is not None:
        version, (topic, salt, ciphertext, relay_sig) = VERSION, sliced
    else:
        try:
            value = codec.decode(data)
        except ProtocolError as exc:
            raise Damaged(str(exc)) from exc
        if not isinstance(value, list) or len(value) != 5:
            raise Damaged("The bundle is not an envelope.")
        version, topic, salt, ciphertext, relay_sig = value
    if version != VERSION:
        raise Damaged(f"The bundle has version {version!r}; this Hearth reads {VERSION}.")
    if not (
        isinstance(topic, bytes)
        and len(topic) == 32
        and isinstance(salt, bytes)
        and len(salt) == 32
        and isinstance(ciphertext, bytes)
        and isinstance(relay_sig, bytes)
        and len(relay_sig) == 64
    ):
        raise Damaged("The bundle's envelope has fields of the wrong type or size.")
    if len(ciphertext) not in PAD_BUCKETS:
        raise Damaged("The bundle's ciphertext is not one of the allowed sizes.")
    envelope = Envelope(topic=topic, salt=salt, ciphertext=ciphertext, relay_sig=relay_sig)
    if len(data) == _CANONICAL_FIXED + len(codec.uvarint(len(ciphertext))) + len(ciphertext):
        # Every field at its shortest, so ``data`` is exactly the envelope's encoding, and
        # its id the hash of the same bytes without the signature (the last item) under a
        # list header of four: no need to encode the fields again to hash them.
        envelope.__dict__["id"] = hashlib.sha256(_UNSIGNED_HEAD + data[2:-66]).digest()
    return envelope


# An envelope's encoding at its shortest, but for the ciphertext's length and bytes: the
# list header (2 bytes), the version (2), topic and salt (34 each), the ciphertext's tag
# (1) and the signature (66: tag, length, 64 bytes).
_CANONICAL_FIXED = 2 + 2 + 34 + 34 + 1 + 66
_UNSIGNED_HEAD = codec.encode([None] * 4)[:2]  # a list of four's header


def open_envelope(envelope: Envelope, keys: EpochKeys) -> Inner:
    """Decrypt and check an envelope's inner bundle: AEAD, then the author's signature.

    A failed decryption is :class:`Damaged` (what the AEAD opens was sealed by a holder of
    the group's keys, so anything wrong past it is that holder's doing, not the wire's).
    Chain and authorization checks need the node's state and come after this.
    """
    plaintext = aead_open(
        keys.bundle_key(envelope.salt), envelope.ciphertext, envelope.associated_data()
    )
    if plaintext is None:
        raise Damaged("A bundle failed to decrypt: it was altered, or is not for this group.")
    length = int.from_bytes(plaintext[:4], "big")
    if length > len(plaintext) - 4:
        raise ProtocolError("A bundle's inner length is wrong.")
    body = plaintext[4 : 4 + length]
    outer = codec.decode(body)
    if not (
        isinstance(outer, list)
        and len(outer) == 2
        and isinstance(outer[0], bytes)
        and isinstance(outer[1], bytes)
    ):
        raise ProtocolError("A bundle's inner part is malformed.")
    # One signed bundle, one envelope: the author's signature does not cover the padding
    # or the outer encoding, so any holder of the keys could seal the same bundle again
    # otherwise — a copy with another id, which would look like its author signing two
    # bundles for one seq (R4) and cut an honest device off on every node.
    if codec.encode(outer) != body or _pad(body) != plaintext:
        raise ProtocolError("A bundle sealed otherwise than its author sealed it (a copy).")
    signed, signature = outer
    fields = codec.decode(signed)
    if not isinstance(fields, list) or len(fields) != 10:
        raise ProtocolError("A bundle's inner part has the wrong fields.")
    kind, group_id, epoch_id, author, seq, prev, heads, created_at, payload, claim = fields
    if not (
        isinstance(kind, str)
        and isinstance(group_id, bytes)
        and isinstance(epoch_id, bytes)
        and isinstance(author, bytes)
        and len(author) == 32
        and isinstance(seq, int)
        and seq >= 0
        and isinstance(prev, bytes)
        and isinstance(heads, list)
        and all(isinstance(h, bytes) for h in heads)
        and isinstance(created_at, int)
        and isinstance(payload, bytes)
        and isinstance(claim, bytes)
    ):
        raise ProtocolError("A bundle's inner part has fields of the wrong type.")
    if not verify(author, signature, _SIGNED + envelope.topic + envelope.salt + signed):
        raise ProtocolError("A bundle's author signature does not verify.")
    if group_id != keys.group_id or epoch_id != keys.epoch_id:
        raise ProtocolError("A bundle names another group or epoch than its topic's.")
    return Inner(
        kind=kind,
        group_id=group_id,
        epoch_id=epoch_id,
        author=author,
        seq=seq,
        prev=prev,
        auth_heads=tuple(h for h in heads if isinstance(h, bytes)),
        created_at=created_at,
        payload=payload,
        claim=claim,
    )


def encode_changes(batches: Sequence[tuple[str, bytes, Sequence[tuple[str, str]]]]) -> bytes:
    """A content payload: ``(document, change bytes, touched entries)`` for each change."""
    return codec.encode(
        [[doc, change, [list(t) for t in touched]] for doc, change, touched in batches]
    )


_Changes = tuple[tuple[str, bytes, tuple[tuple[str, str], ...]], ...]
_REMEMBERED_PAYLOAD_BYTES = 16 * 1024


def decode_changes(payload: bytes) -> list[tuple[str, bytes, list[tuple[str, str]]]]:
    """The changes a content payload carries.

    Taking a bundle in, and judging a group's bundles again, reads each payload several
    times: small ones (most) are remembered once read (~16 MiB at most).
    """
    if len(payload) <= _REMEMBERED_PAYLOAD_BYTES:
        found = _remembered_changes(payload)
    else:
        found = _decode_changes(payload)
    return [(doc, change, list(touched)) for doc, change, touched in found]


@lru_cache(maxsize=1024)
def _remembered_changes(payload: bytes) -> _Changes:
    return _decode_changes(payload)


def _decode_changes(payload: bytes) -> _Changes:
    value = codec.decode(payload)
    if not isinstance(value, list):
        raise ProtocolError("A bundle's payload is not a list of changes.")
    out = []
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], bytes)
            and isinstance(item[2], list)
        ):
            raise ProtocolError("A bundle's payload holds a malformed change.")
        touched = []
        for ref in item[2]:
            if not (
                isinstance(ref, list)
                and len(ref) == 2
                and isinstance(ref[0], str)
                and isinstance(ref[1], str)
            ):
                raise ProtocolError("A bundle's payload names a malformed entry.")
            touched.append((ref[0], ref[1]))
        out.append((item[0], item[1], tuple(touched)))
    return tuple(out)


def encode_snapshot(
    docs: Sequence[tuple[str, bytes]], heads: Sequence[tuple[bytes, int, bytes]]
) -> bytes:
    """A snapshot payload: saved documents and, per device, the last bundle they hold."""
    return codec.encode([[list(d) for d in docs], [list(h) for h in heads]])


def decode_snapshot(
    payload: bytes,
) -> tuple[list[tuple[str, bytes]], list[tuple[bytes, int, bytes]]]:
    """The saved documents and the feed heads a snapshot payload carries."""
    value = codec.decode(payload)
    if not (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], list)
        and isinstance(value[1], list)
    ):
        raise ProtocolError("A snapshot's payload is malformed.")
    docs = []
    for item in value[0]:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], bytes)
        ):
            raise ProtocolError("A snapshot holds a malformed document.")
        docs.append((item[0], item[1]))
    heads = []
    for item in value[1]:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], bytes)
            and isinstance(item[1], int)
            and isinstance(item[2], bytes)
        ):
            raise ProtocolError("A snapshot names a malformed feed head.")
        heads.append((item[0], item[1], item[2]))
    return docs, heads
