"""Wire frames: one WebSocket binary message each, typed and size-bounded.

Every frame is a map with a type ``t`` and typed fields. :func:`decode_frame` checks the
size, the type and every field and returns a frozen event; :func:`encode_frame` does the
reverse. ``docs/protocol.md`` describes the exchange these frames make up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import MISSING, Field, dataclass, fields
from dataclasses import field as dataclass_field
from typing import ClassVar, Union, cast, get_args

from hearth.errors import FrameTooBig, ProtocolError
from hearth.protocol import codec

__all__ = [
    "DELIVERIES",
    "DEVICE_PROOFS",
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "VERSIONS",
    "Ack",
    "CaughtUp",
    "Deliver",
    "Deliveries",
    "DeviceProof",
    "Error",
    "Frame",
    "Freeze",
    "Hello",
    "Mailbox",
    "MailboxClose",
    "Mirror",
    "Peer",
    "Publish",
    "Register",
    "Subscribe",
    "Welcome",
    "decode_frame",
    "encode_frame",
    "vector_from_wire",
    "vector_to_wire",
]

PROTOCOL_VERSION = 3
"""The newest version of the exchange this Hearth speaks. Version 2 added the device proofs
between nodes (``hello.nonce``, the ``device`` frame); version 3 the ``deliveries`` frame,
many stored bundles of a catch-up in one. A relay serves 1, 2 and 3 alike."""
VERSIONS = (1, 2, 3)
"""Every version this Hearth speaks, offered in its ``hello``."""
DEVICE_PROOFS = 2
"""The first version in which two nodes prove their devices: the least they sync directly at."""
DELIVERIES = 3
"""The first version in which a relay may send a catch-up's bundles many to a frame."""
MAX_FRAME = 1024 * 1024 + 4096  # one full bundle plus framing


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """First frame from the side that connects: the versions it speaks and what it is."""

    TYPE: ClassVar[str] = "hello"
    versions: list[int]
    role: str  # "node" or "relay"
    agent: str
    nonce: bytes = b""  # to a peer node: fresh, so the peer's device proof is for us alone


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """The answer to :class:`Hello`: the version chosen and the limits that apply."""

    TYPE: ClassVar[str] = "welcome"
    version: int
    limits: dict[str, int]
    challenge: bytes = b""  # what the connecting side's proof must sign (peer nodes, relays)
    relay_id: bytes = b""  # from a relay: its public identity key, which peer relays know it by
    proof: bytes = (
        b""  # to a dialing relay: the relay id's signature over its nonce (and challenge)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    """Ask the relay to accept bundles for a topic signed by this relay key."""

    TYPE: ClassVar[str] = "register"
    topic: bytes
    relay_key: bytes
    proof: bytes  # the relay key's signature over the topic and itself


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe:
    """Send me every bundle of this topic after this arrival cursor, then new ones live."""

    TYPE: ClassVar[str] = "subscribe"
    topic: bytes
    after: int
    from_snapshot: bool = False  # start from the newest snapshot instead (a fresh device)
    have: list[list[bytes | int]] = dataclass_field(default_factory=list)
    # to a peer node only: this side's version vector, [[device key, seq], …]


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    """One stored bundle of a topic, with its arrival cursor at this relay."""

    TYPE: ClassVar[str] = "deliver"
    topic: bytes
    cursor: int
    envelope: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliveries:
    """Stored bundles of a topic, oldest first, each with its arrival cursor: what a
    catch-up sends as many :class:`Deliver` frames, in one (version 3 on; a relay sends
    them only to a node that speaks it)."""

    TYPE: ClassVar[str] = "deliveries"
    topic: bytes
    cursors: list[int]
    envelopes: list[bytes]

    def each(self) -> list[Deliver]:
        """The same bundles, one :class:`Deliver` each."""
        return [
            Deliver(topic=self.topic, cursor=cursor, envelope=envelope)
            for cursor, envelope in zip(self.cursors, self.envelopes, strict=True)
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class CaughtUp:
    """Everything of the topic up to this cursor has been delivered; what follows is live."""

    TYPE: ClassVar[str] = "caught_up"
    topic: bytes
    cursor: int
    have: list[list[bytes | int]] = dataclass_field(default_factory=list)
    # from a peer node only: its version vector, so the other side sends what it lacks


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """Store this bundle and pass it on."""

    TYPE: ClassVar[str] = "publish"
    envelope: bytes
    covers: int = 0  # for a snapshot: it holds everything up to this cursor at this relay
    cover_proof: bytes = b""  # the topic's relay key's signature over the bundle id and covers


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The bundle with this id is stored durably (at this cursor)."""

    TYPE: ClassVar[str] = "ack"
    id: bytes
    cursor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """Something was refused; ``id`` names the bundle when it is about one."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    id: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mailbox:
    """A message through an invite mailbox at the relay, either way.

    From a client, ``create`` opens a new mailbox under the number (refused if taken) and
    the relay confirms with an empty ``create`` frame; without it the client joins the
    mailbox (at most two do). A non-empty body goes to the other side, now or when it
    joins."""

    TYPE: ClassVar[str] = "mailbox"
    nameplate: int
    body: bytes = b""
    create: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxClose:
    """The mailbox is closed (burnt): by a side that finished or gave up, or by the relay."""

    TYPE: ClassVar[str] = "mailbox_close"
    nameplate: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Freeze:
    """From a node: this topic's group has a newer key; after the relay's grace period
    take no more bundles for it (the relay key's signature over the topic proves it)."""

    TYPE: ClassVar[str] = "freeze"
    topic: bytes
    proof: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceProof:
    """Between two nodes, each way, once the connecting one has registered a topic: which
    device this is, signed over the handshake's transcript
    (:mod:`hearth.protocol.handshake`)."""

    TYPE: ClassVar[str] = "device"
    device: bytes  # the device's Ed25519 public key
    proof: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    """From a relay dialing a peer relay: who it is, proven by signing the challenge."""

    TYPE: ClassVar[str] = "peer"
    relay_id: bytes
    proof: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Mirror:
    """Between peer relays, either way: send me every topic's registration, then every
    bundle you stored after this cursor of yours (except those I sent you), then new ones
    live, ending the catch-up with a :class:`CaughtUp` for the all-zero topic."""

    TYPE: ClassVar[str] = "mirror"
    after: int


Frame = Union[  # noqa: UP007
    Hello,
    Welcome,
    Register,
    Subscribe,
    Deliver,
    Deliveries,
    CaughtUp,
    Publish,
    Ack,
    Error,
    Mailbox,
    MailboxClose,
    Peer,
    Mirror,
    Freeze,
    DeviceProof,
]
_TYPES: dict[str, type[Frame]] = {cls.TYPE: cls for cls in get_args(Frame)}
# Per frame type (by its tag): its fields, and those a frame must carry.
_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in fields(cls)) for kind, cls in _TYPES.items()
}
_FIELD_SETS = {kind: frozenset(names) for kind, names in _FIELDS.items()}
_REQUIRED: dict[str, frozenset[str]] = {
    kind: frozenset(
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    )
    for kind, cls in _TYPES.items()
}


def _default(f: Field[object]) -> object:
    if f.default is not MISSING:
        return f.default
    factory = f.default_factory
    return factory() if callable(factory) else None


# Per frame type: the optional fields and their defaults. A field at its default is left out
# on the wire, so adding an optional field does not break older peers (they refuse fields
# they do not know): a node that sends no nonce still talks to a relay from before it.
_DEFAULTS: dict[str, dict[str, object]] = {
    kind: {f.name: _default(f) for f in fields(cls) if f.name not in _REQUIRED[kind]}
    for kind, cls in _TYPES.items()
}
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "versions": list,
    "role": str,
    "agent": str,
    "version": int,
    "limits": dict,
    "topic": bytes,
    "relay_key": bytes,
    "proof": bytes,
    "after": int,
    "cursor": int,
    "envelope": bytes,
    "id": bytes,
    "code": str,
    "message": str,
    "from_snapshot": bool,
    "covers": int,
    "cover_proof": bytes,
    "challenge": bytes,
    "have": list,
    "nameplate": int,
    "body": bytes,
    "create": bool,
    "relay_id": bytes,
    "nonce": bytes,
    "device": bytes,
    "cursors": list,
    "envelopes": list,
}
_TOPIC_LENGTH = 32
# Every number on the wire is below 2**63: what a store's signed 64-bit integer holds (a
# cursor, a seq); a bigger one is a protocol error, not a crash where it is stored.
_INT_LIMIT = 2**63


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of a frame."""
    kind = type(frame)
    if kind is Deliver or kind is Ack:  # a relay writes these for every bundle it takes in
        fixed = _fixed_shape(frame)  # type: ignore[arg-type]
        if fixed is not None:
            return fixed
    body: dict[str, codec.Value] = {"t": frame.TYPE}
    defaults = _DEFAULTS[frame.TYPE]
    for name in _FIELDS[frame.TYPE]:
        value = getattr(frame, name)
        if name not in defaults or value != defaults[name]:
            body[name] = value
    data = codec.encode(body)
    if len(data) > MAX_FRAME:
        raise FrameTooBig("A frame is larger than the frame limit.")
    return data


# A delivery as encode_frame writes one: {"cursor": …, "envelope": …, "t": "deliver",
# "topic": …} (keys sorted). A catch-up is thousands of them, so those written exactly so
# are read by slicing (_delivery); anything else goes the general way.
_DELIVER_HEAD = codec.encode({"cursor": None, "envelope": None, "t": None, "topic": None})[:2]
_DELIVER_CURSOR = _DELIVER_HEAD + codec.encode("cursor")
_INT_TAG = codec.encode(0)[:1]
_DELIVER_ENVELOPE = codec.encode("envelope") + codec.bytes_head(0)[:1]
_DELIVER_TAIL = b"".join(codec.encode(v) for v in ("t", "deliver", "topic")) + codec.bytes_head(
    _TOPIC_LENGTH
)


_ACK_CURSOR = codec.encode({"cursor": None, "id": None, "t": None})[:2] + codec.encode("cursor")
_ACK_ID = codec.encode("id")
_ACK_TAIL = codec.encode("t") + codec.encode("ack")


def _fixed_shape(frame: Deliver | Ack) -> bytes | None:
    """A delivery's or an acknowledgement's bytes written by hand, exactly as the general
    way writes them (tests/test_fuzz.py holds them to it); ``None`` where that way would
    have something else to say (a number out of range, a topic of the wrong size)."""
    cursor = frame.cursor
    if cursor < 0 or cursor.bit_length() > 64:
        return None
    number = _INT_TAG + codec.uvarint(cursor << 1)
    if isinstance(frame, Ack):
        head = codec.bytes_head(len(frame.id))
        return b"".join((_ACK_CURSOR, number, _ACK_ID, head, frame.id, _ACK_TAIL))
    envelope = frame.envelope
    if len(frame.topic) != _TOPIC_LENGTH or len(envelope) > MAX_FRAME:
        return None
    head = codec.uvarint(len(envelope))
    data = b"".join(
        (_DELIVER_CURSOR, number, _DELIVER_ENVELOPE, head, envelope, _DELIVER_TAIL, frame.topic)
    )
    return data if len(data) <= MAX_FRAME else None


# A publish as encode_frame writes one without a snapshot's fields: {"envelope": …, "t":
# "publish"}. The relay reads one for every bundle it takes in.
_PUBLISH_HEAD = (
    codec.encode({"envelope": None, "t": None})[:2]
    + codec.encode("envelope")
    + codec.bytes_head(0)[:1]
)
_PUBLISH_TAIL = codec.encode("t") + codec.encode("publish")


def _publish(data: bytes) -> Publish | None:
    """A publish frame written exactly as :func:`encode_frame` writes one without a
    snapshot's fields; ``None`` for anything else."""
    at = len(_PUBLISH_HEAD)
    if data[:at] != _PUBLISH_HEAD:
        return None
    found = codec.read_uvarint(data, at)
    if found is None:
        return None
    length, at = found
    if at + length + len(_PUBLISH_TAIL) != len(data) or data[at + length :] != _PUBLISH_TAIL:
        return None
    return Publish(envelope=data[at : at + length])


def _delivery(data: bytes) -> Deliver | None:
    """A delivery frame written exactly as :func:`encode_frame` writes one, with a
    cursor in range; ``None`` for anything else."""
    at = len(_DELIVER_CURSOR)
    if data[:at] != _DELIVER_CURSOR or data[at : at + 1] != _INT_TAG:
        return None
    found = codec.read_uvarint(data, at + 1)
    if found is None or found[0] & 1 or found[0] >> 1 >= _INT_LIMIT:  # zigzag: odd < 0
        return None
    cursor, at = found[0] >> 1, found[1]
    if data[at : at + len(_DELIVER_ENVELOPE)] != _DELIVER_ENVELOPE:
        return None
    found = codec.read_uvarint(data, at + len(_DELIVER_ENVELOPE))
    if found is None:
        return None
    length, at = found
    tail = at + length
    if tail + len(_DELIVER_TAIL) + _TOPIC_LENGTH != len(data):
        return None
    if data[tail : tail + len(_DELIVER_TAIL)] != _DELIVER_TAIL:
        return None
    return Deliver(topic=data[-_TOPIC_LENGTH:], cursor=cursor, envelope=data[at:tail])


def decode_frame(data: bytes) -> Frame:
    """The frame in ``data``, fully checked, or :class:`ProtocolError` naming what is wrong."""
    if len(data) > MAX_FRAME:
        raise FrameTooBig(f"A frame of {len(data)} bytes is over the {MAX_FRAME}-byte limit.")
    data = bytes(data)
    sliced = _delivery(data) or _publish(data)
    return sliced if sliced is not None else _decode_any(data)


def _decode_any(data: bytes) -> Frame:
    body = codec.decode(data)
    if not isinstance(body, dict):
        raise ProtocolError("A frame is not a map.")
    kind = body.pop("t", None)
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"Unknown frame type {kind!r}.")
    if not body.keys() <= _FIELD_SETS[kind] or not _REQUIRED[kind] <= body.keys():
        raise ProtocolError(f"A {kind} frame has the wrong fields.")
    for name, value in body.items():
        wanted = _FIELD_TYPES[name]
        if not isinstance(value, wanted) or (isinstance(value, bool) and wanted is int):
            raise ProtocolError(f"A {kind} frame's {name} has the wrong type.")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ProtocolError(f"A {kind} frame's {name} is negative.")
        if isinstance(value, int) and value >= _INT_LIMIT:
            raise ProtocolError(f"A {kind} frame's {name} is too large.")
    if "relay_id" in body and len(body["relay_id"]) not in (0, 32):
        raise ProtocolError(f"A {kind} frame's relay id is not 32 bytes.")
    if "device" in body and len(body["device"]) != 32:
        raise ProtocolError(f"A {kind} frame's device key is not 32 bytes.")
    if "nonce" in body and len(body["nonce"]) > 64:
        raise ProtocolError(f"A {kind} frame's nonce is over 64 bytes.")
    if "topic" in body and len(body["topic"]) != _TOPIC_LENGTH:
        raise ProtocolError(f"A {kind} frame's topic is not 32 bytes.")
    if kind == "hello" and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in body["versions"]
    ):
        raise ProtocolError("A hello frame's versions are not numbers.")
    if kind == "welcome" and not all(
        isinstance(k, str) and isinstance(v, int) and 0 <= v < _INT_LIMIT
        for k, v in body["limits"].items()
    ):
        raise ProtocolError("A welcome frame's limits are malformed.")
    if "have" in body:
        _check_vector(kind, body["have"])
    if kind == "deliveries":
        _check_deliveries(body["cursors"], body["envelopes"])
    return cls(**body)


MAX_DELIVERIES = MAX_FRAME // 512
"""Bundles a ``deliveries`` frame can hold: each is padded to at least 512 bytes
(:data:`hearth.protocol.bundle.PAD_BUCKETS`), so more in one frame is a lie, whose
thousands of entries would each be taken in by the node."""


def _check_deliveries(cursors: list[codec.Value], envelopes: list[codec.Value]) -> None:
    if not cursors or len(cursors) != len(envelopes):
        raise ProtocolError("A deliveries frame's cursors and envelopes do not pair up.")
    if len(cursors) > MAX_DELIVERIES:
        raise ProtocolError(
            f"A deliveries frame carries {len(cursors)} bundles, more than a frame can hold."
        )
    if not all(type(c) is int and 0 <= c < _INT_LIMIT for c in cursors) or not all(
        type(e) is bytes for e in envelopes
    ):
        raise ProtocolError("A deliveries frame's cursors or envelopes have the wrong type.")


def vector_to_wire(have: Iterable[tuple[bytes, int]]) -> list[list[bytes | int]]:
    """A version vector as a ``have`` field."""
    return [[author, seq] for author, seq in have]


def vector_from_wire(have: list[list[bytes | int]]) -> dict[bytes, int]:
    """A checked ``have`` field as device key -> highest seq."""
    return {bytes(cast(bytes, a)): int(s) for a, s in have}


def _check_vector(kind: str, have: list[codec.Value]) -> None:
    for item in have:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], bytes)
            and len(item[0]) == 32
            and isinstance(item[1], int)
            and not isinstance(item[1], bool)
            and 0 <= item[1] < 2**63
        ):
            raise ProtocolError(f"A {kind} frame's version vector is malformed.")
