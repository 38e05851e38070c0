"""A node answering another node's exchange (``hearth serve --listen``), as a pure machine.

The connecting node speaks to a peer exactly as to a relay (a
:class:`~hearth.protocol.sync.RelaySession` with peer plans); this side plays the relay's
part for the topics of its own groups, with two differences that come from being able to
decrypt:

- a registration must answer this connection's fresh challenge (``Welcome.challenge``)
  with the topic's relay key, so only a holder of the epoch secret gets anything — a
  registration seen at a relay cannot be replayed here;
- once a topic is registered, the connecting node proves which device it is by signing
  the handshake's transcript (:mod:`hearth.protocol.handshake`), and this node answers
  in kind; nothing is delivered or taken before that, and a device one of our groups
  removed gets nothing of that group's topics (it may still hold an old epoch's secret);
  an older epoch's topic is delivered only to a device the group lists now (someone
  removed may make a new device key; only the current epoch's holders are in the group,
  or joining it, and a joining device's first bundles must reach us before it is listed);
- the summary is a version vector both ways: the subscriber's in ``Subscribe.have`` says
  what to deliver (:class:`CatchUpPeer`), ours in ``CaughtUp.have`` says what to send us.

Published bundles go to the node's intake (:class:`TakeIn`), whose verdict comes back
through :meth:`ServingSession.taken`. No sockets, clocks or randomness here: the adapter
(``hearth.net.peer_listener``) passes the challenge in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from hearth.crypto import SigningKey
from hearth.errors import FrameTooBig, ProtocolError
from hearth.protocol.bundle import parse_envelope, peer_proof_valid
from hearth.protocol.connection import CLOSE_PROTOCOL, CLOSE_TOO_BIG, Connection, Role
from hearth.protocol.frames import (
    DEVICE_PROOFS,
    MAX_FRAME,
    Ack,
    CaughtUp,
    Deliver,
    DeviceProof,
    Error,
    Frame,
    Hello,
    Mailbox,
    MailboxClose,
    Publish,
    Register,
    Subscribe,
    Welcome,
    vector_from_wire,
    vector_to_wire,
)
from hearth.protocol.handshake import (
    ACCEPTING,
    CONNECTING,
    OLDER_PEER,
    device_proof,
    device_proof_valid,
)
from hearth.protocol.handshake import transcript as transcript_of
from hearth.protocol.sync import Send

__all__ = ["CatchUpPeer", "Close", "Output", "Send", "ServingSession", "TakeIn", "ToMailboxes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CatchUpPeer:
    """Deliver the bundles of ``topic`` the other node lacks by its version vector, then
    :meth:`ServingSession.caught_up`."""

    topic: bytes
    have: dict[bytes, int]


@dataclass(frozen=True, slots=True)
class TakeIn:
    """A bundle the other node published: run it through the intake, then
    :meth:`ServingSession.taken`."""

    id: bytes
    envelope: bytes


@dataclass(frozen=True, slots=True)
class ToMailboxes:
    """An invite mailbox frame (an invite run over the local network): for the
    listener's :class:`~hearth.protocol.mailbox.Mailboxes`."""

    frame: Mailbox | MailboxClose


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this WebSocket code and reason."""

    code: int
    reason: str


Output = Union[Send, CatchUpPeer, TakeIn, ToMailboxes, Close]  # noqa: UP007


class ServingSession:
    """This node's side of one connection from another node."""

    def __init__(
        self,
        topics: Mapping[bytes, bytes],
        challenge: bytes,
        *,
        device_key: SigningKey,
        departed: Mapping[bytes, frozenset[bytes]],
        listed: Mapping[bytes, frozenset[bytes]] | None = None,
    ) -> None:
        """``topics`` maps each topic this node serves to its relay key's public half;
        ``departed``, each topic to the device keys its group removed (or that left);
        ``listed``, each topic of an older epoch to the devices its group has now: only
        those are delivered its bundles."""
        self.conn = Connection(Role.ACCEPTING)
        self.topics = dict(topics)
        self.challenge = challenge
        self.device_key = device_key
        self.departed = departed
        self.listed = listed or {}
        self.transcript = b""
        self.peer_device = b""  # the other node's device key, once it proved it
        self.registered: set[bytes] = set()
        self.refused: set[bytes] = set()  # registrations refused: their subscriptions too
        self.live: set[bytes] = set()  # caught up: new bundles of these go out as they come

    @property
    def in_a_group(self) -> bool:
        """Whether the other node proved a device one of our groups has now: for a topic it
        registered, one the group did not remove and (an older epoch's) lists now. Only
        such a connection may stay past the hello timeout: a removed member who proves a
        device key made since gets nothing, and holds no place either."""
        return bool(self.peer_device) and any(
            self.peer_device not in self.departed.get(topic, frozenset())
            and (topic not in self.listed or self.peer_device in self.listed[topic])
            for topic in self.registered
        )

    def receive(self, data: bytes) -> list[Output]:
        """What follows from one message from the other node."""
        try:
            frame = self.conn.receive(data)
            return self._handle(frame)
        except ProtocolError as exc:
            code = CLOSE_TOO_BIG if isinstance(exc, FrameTooBig) else CLOSE_PROTOCOL
            return [Close(code, str(exc))]

    def send(self, frame: Frame) -> bytes:
        """The bytes of a frame, through the connection's state machine."""
        return self.conn.send(frame)

    def caught_up(self, topic: bytes, have: Sequence[tuple[bytes, int]]) -> Frame:
        """The frame that ends a catch-up, carrying our version vector."""
        return CaughtUp(topic=topic, cursor=0, have=vector_to_wire(have))

    def deliver(self, topic: bytes, envelope: bytes) -> Frame | None:
        """A new bundle for the other node, if it follows this topic live."""
        return Deliver(topic=topic, cursor=0, envelope=envelope) if topic in self.live else None

    @staticmethod
    def taken(bundle_id: bytes, rejected_because: str = "") -> Frame:
        """The answer to a published bundle, once the intake has judged it."""
        if rejected_because:
            return Error(code="rejected", message=rejected_because, id=bundle_id)
        return Ack(id=bundle_id, cursor=0)

    def _handle(self, frame: Frame) -> list[Output]:
        if isinstance(frame, Hello):
            if frame.role != "node":
                return [Close(CLOSE_PROTOCOL, "Only nodes of this node's groups connect here.")]
            version = self.conn.agreed or 0
            if version < DEVICE_PROOFS:
                return [Close(CLOSE_PROTOCOL, OLDER_PEER)]
            welcome = Welcome(
                version=version, limits={"max_frame": MAX_FRAME}, challenge=self.challenge
            )
            self.transcript = transcript_of(frame, welcome)
            return [Send(welcome)]
        if isinstance(frame, Register):
            if self.topics.get(frame.topic) != frame.relay_key:
                self.refused.add(frame.topic)
                return [_error("unknown-topic", "This node is not in that group.", frame.topic)]
            if not peer_proof_valid(frame.relay_key, self.challenge, frame.topic, frame.proof):
                self.refused.add(frame.topic)
                return [_error("bad-registration", "The proof does not verify.", frame.topic)]
            self.registered.add(frame.topic)
            return []
        if isinstance(frame, DeviceProof):
            return self._device(frame)
        if isinstance(frame, Subscribe):
            if frame.topic in self.refused:
                return []  # already answered
            if frame.topic not in self.registered:
                return [_error("unknown-topic", "Register the topic first.", frame.topic)]
            refusal = self._refusal(frame.topic)
            listed = self.listed.get(frame.topic)
            if refusal is None and listed is not None and self.peer_device not in listed:
                refusal = _error(
                    "not-listed",
                    "This device is not in that group now; a group's older keys are shared "
                    "only with its devices.",
                    frame.topic,
                )
            if refusal is not None:
                self.refused.add(frame.topic)
                return [refusal]
            # Live from now: what is stored from here on goes out as it comes, even while
            # the catch-up is being sent (the adapter skips what it sent already).
            self.live.add(frame.topic)
            return [CatchUpPeer(frame.topic, vector_from_wire(frame.have))]
        if isinstance(frame, Publish):
            envelope = parse_envelope(frame.envelope)  # malformed: closes the connection
            if envelope.topic not in self.registered:
                return [_error("unknown-topic", "Register the topic first.", envelope.id)]
            if refusal := self._refusal(envelope.topic, about=envelope.id):
                return [refusal]
            return [TakeIn(envelope.id, frame.envelope)]
        if isinstance(frame, (Mailbox, MailboxClose)):
            return [ToMailboxes(frame)]
        if isinstance(frame, Error):
            log.info("a peer reported: %s %s", frame.code, frame.message)
        return []

    def _device(self, frame: DeviceProof) -> list[Output]:
        """The other node's device proof; ours in answer, to a holder of a topic's key."""
        if not self.registered:
            return [Close(CLOSE_PROTOCOL, "Register a topic before proving the device.")]
        if self.peer_device:
            return [Close(CLOSE_PROTOCOL, "The device was proven already.")]
        if not device_proof_valid(frame, self.transcript, CONNECTING):
            return [Close(CLOSE_PROTOCOL, "The device proof does not verify.")]
        self.peer_device = frame.device
        return [Send(device_proof(self.device_key, self.transcript, ACCEPTING))]

    def _refusal(self, topic: bytes, about: bytes = b"") -> Send | None:
        """The error for a subscription or bundle from a device that may not have it."""
        if not self.peer_device:
            return _error("no-device", "Prove which device this is first.", about or topic)
        if self.peer_device in self.departed.get(topic, frozenset()):
            return _error("removed", "This device is no longer in that group.", about or topic)
        return None


def _error(code: str, message: str, about: bytes) -> Send:
    return Send(Error(code=code, message=message, id=about))
