"""The node's side of an exchange with a relay, as a pure state machine.

``RelaySession.handle(frame) -> list[Output]``: frames from the relay go in; what to send,
what arrived, what was acknowledged or refused, and when the exchange has settled come
out. The async adapter (``hearth.net.sync_client``) only carries outputs out. It never
touches a socket or a clock, so it can be driven by tests frame by frame.

The exchange, per topic of the group: register the topic with its relay key, subscribe
after the last cursor this node read from this relay, then publish every bundle the relay
is not known to have — a few at a time, more as acknowledgements come back. The session
has *settled* when every topic is caught up and every bundle sent was acknowledged or
refused; a one-shot sync stops there, a live one keeps going.

The same session talks to a peer node (``hearth serve --listen``). A peer can decrypt, so
the summary is a version vector instead of a cursor: the registration answers the peer's
fresh challenge, the subscription carries our vector, the peer's ``caught_up`` carries
its own, and the session asks the adapter (:class:`PeerHas`) for the bundles the peer
lacks before it can settle. Between registering and subscribing, each side proves which
device it is (:mod:`hearth.protocol.handshake`); a peer that is a device our group
removed gets none of that group's topics, and one whose proof fails ends the exchange.
"""

from __future__ import annotations

import enum
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Union

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover - Python 3.10
    from typing_extensions import assert_never

from hearth.crypto import SigningKey
from hearth.errors import ProtocolError
from hearth.protocol.frames import (
    DEVICE_PROOFS,
    VERSIONS,
    Ack,
    CaughtUp,
    Deliver,
    Deliveries,
    DeviceProof,
    Error,
    Frame,
    Freeze,
    Hello,
    Mailbox,
    MailboxClose,
    Mirror,
    Peer,
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

__all__ = [
    "TRANSITIONS",
    "Acked",
    "Arrived",
    "Event",
    "Output",
    "Paused",
    "PeerHas",
    "Refused",
    "RelaySession",
    "Send",
    "SessionState",
    "Settled",
    "TopicPlan",
]

WINDOW = 16  # bundles in flight before waiting for acknowledgements


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicPlan:
    """What to do with one topic: its registration, where to resume, what to upload."""

    topic: bytes
    relay_key: bytes
    proof: bytes
    after: int
    outgoing: Sequence[tuple[bytes, bytes]] = ()  # (bundle id, envelope bytes)
    from_snapshot: bool = False  # nothing read from this relay yet: start from a snapshot
    prove: Callable[[bytes], bytes] | None = None  # a peer node: answer its challenge
    have: Sequence[tuple[bytes, int]] = ()  # a peer node: our version vector
    freeze: bytes = b""  # a superseded epoch's topic: the proof that asks relays to freeze it
    departed: frozenset[bytes] = frozenset()  # a peer node: devices the group removed
    read: bool = True  # False: register and publish only, reading nothing from the relay

    @property
    def peer(self) -> bool:
        """Whether this plan is for a peer node rather than a relay."""
        return self.prove is not None


@dataclass(frozen=True, slots=True)
class Send:
    """Send this frame."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class Arrived:
    """A bundle arrived from the relay at this cursor."""

    topic: bytes
    cursor: int
    envelope: bytes


@dataclass(frozen=True, slots=True)
class Acked:
    """The relay stored this bundle."""

    id: bytes
    cursor: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The relay refused something; ``id`` names the bundle if it was one."""

    id: bytes
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Paused:
    """The relay asked us to slow down: call :meth:`RelaySession.resume` after a while."""

    seconds: float


@dataclass(frozen=True, slots=True)
class PeerHas:
    """A peer node's version vector for a topic: call :meth:`RelaySession.offer` with the
    bundles it lacks."""

    topic: bytes
    have: dict[bytes, int]


@dataclass(frozen=True, slots=True)
class Settled:
    """Nothing left to send, nothing left to catch up on."""


Output = Union[Send, Arrived, Acked, Refused, Paused, PeerHas, Settled]  # noqa: UP007


class SessionState(enum.Enum):
    """Where an exchange with a relay (or a peer node) is."""

    NEW = "new"  # nothing sent yet: start() sends the hello
    GREETING = "greeting"  # the hello sent, waiting for the welcome
    EXCHANGING = "exchanging"  # registering, catching up, uploading
    SETTLED = "settled"  # every topic caught up, every bundle sent answered


class Event(enum.Enum):
    """What moves a session: a frame from the other side, by kind, or a call of ours."""

    START = "start"  # start()
    WELCOME = "welcome"
    DEVICE_PROOF = "device-proof"  # a peer node proves which device it is
    BUNDLES = "bundles"  # deliver, deliveries
    CAUGHT_UP = "caught-up"
    ACK = "ack"
    ERROR = "error"
    OTHER = "other"  # a frame that is not for this session (a mailbox's): ignored
    PUBLISH = "publish"  # publish(), offer(), publish_snapshot(): more to send
    RESUME = "resume"  # resume() after a pause
    SETTLE = "settle"  # nothing left to catch up on, send or wait for


_S = SessionState
_ANSWERS = (Event.DEVICE_PROOF, Event.BUNDLES, Event.CAUGHT_UP, Event.ACK, Event.ERROR)

TRANSITIONS: dict[tuple[SessionState, Event], SessionState] = {
    (_S.NEW, Event.START): _S.GREETING,
    (_S.NEW, Event.PUBLISH): _S.NEW,  # queued until the welcome
    (_S.NEW, Event.RESUME): _S.NEW,
    (_S.GREETING, Event.WELCOME): _S.EXCHANGING,
    (_S.GREETING, Event.ERROR): _S.GREETING,  # the relay refused the hello
    (_S.GREETING, Event.OTHER): _S.GREETING,
    (_S.GREETING, Event.PUBLISH): _S.GREETING,
    (_S.GREETING, Event.RESUME): _S.GREETING,
    **{(_S.EXCHANGING, event): _S.EXCHANGING for event in _ANSWERS},
    (_S.EXCHANGING, Event.OTHER): _S.EXCHANGING,
    (_S.EXCHANGING, Event.PUBLISH): _S.EXCHANGING,
    (_S.EXCHANGING, Event.RESUME): _S.EXCHANGING,
    (_S.EXCHANGING, Event.SETTLE): _S.SETTLED,
    # Settled, a live session still takes what others publish (and a stray answer).
    **{(_S.SETTLED, event): _S.SETTLED for event in _ANSWERS},
    (_S.SETTLED, Event.OTHER): _S.SETTLED,
    (_S.SETTLED, Event.PUBLISH): _S.EXCHANGING,
    (_S.SETTLED, Event.RESUME): _S.SETTLED,
}
"""Every move a session may make: (where it is, what happened) -> where it goes. Anything
else (a second welcome, a bundle before the welcome) ends the exchange with a
:class:`~hearth.errors.ProtocolError`. :class:`~hearth.protocol.connection.Connection`
lets none of those frames through, so this table says again, for this session, what the
connection already holds to."""


def _event_of(frame: Frame) -> Event:
    """The kind of event a frame from the other side is."""
    match frame:
        case Welcome():
            return Event.WELCOME
        case DeviceProof():
            return Event.DEVICE_PROOF
        case Deliver() | Deliveries():
            return Event.BUNDLES
        case CaughtUp():
            return Event.CAUGHT_UP
        case Ack():
            return Event.ACK
        case Error():
            return Event.ERROR
        case (
            Hello()
            | Register()
            | Subscribe()
            | Publish()
            | Mailbox()
            | MailboxClose()
            | Peer()
            | Mirror()
            | Freeze()
        ):
            return Event.OTHER
        case _:
            assert_never(frame)


@dataclass
class RelaySession:
    """One exchange with one relay over one connection.

    Where it is is :attr:`state`, moved only by :meth:`_move` along :data:`TRANSITIONS`.
    The sets say what is outstanding per topic and per bundle: what is catching up, what
    waits for an offer to a peer, what is queued and in flight.
    """

    plans: Sequence[TopicPlan]
    agent: str = "hearth"
    device_key: SigningKey | None = None  # a peer node: our device, to prove who we are
    nonce: bytes = b""  # a peer node: fresh for this connection, from the adapter
    queue: deque[tuple[bytes, Publish]] = field(default_factory=deque)
    in_flight: set[bytes] = field(default_factory=set)
    catching_up: set[bytes] = field(default_factory=set)
    awaiting_offer: set[bytes] = field(default_factory=set)  # peers' topics, see PeerHas
    refused_topics: set[bytes] = field(default_factory=set)  # the other side will not serve
    state: SessionState = SessionState.NEW
    sent: int = 0
    received: int = 0
    peer_device: bytes = b""  # a peer node's device key, once it proved it
    _hello: Hello | None = None
    _transcript: bytes = b""
    _in_flight_frames: dict[bytes, Publish] = field(default_factory=dict)  # for resending

    @property
    def to_peer(self) -> bool:
        """Whether the other side is a peer node rather than a relay."""
        return self.device_key is not None

    @property
    def welcomed(self) -> bool:
        """Whether the other side has welcomed us (bundles are sent from then on)."""
        return self.state in (SessionState.EXCHANGING, SessionState.SETTLED)

    @property
    def settled(self) -> bool:
        """Whether nothing is left to catch up on, send or wait for (until more is
        published)."""
        return self.state is SessionState.SETTLED

    def _move(self, event: Event, what: str = "") -> None:
        """Take one step along :data:`TRANSITIONS`, or refuse a step it does not hold."""
        following = TRANSITIONS.get((self.state, event))
        if following is None:
            raise ProtocolError(f"Did not expect {what or event.value} while {self.state.value}.")
        self.state = following

    def start(self) -> list[Output]:
        """The first thing to send."""
        self._move(Event.START)
        nonce = self.nonce if self.to_peer else b""
        self._hello = Hello(versions=list(VERSIONS), role="node", agent=self.agent, nonce=nonce)
        return [Send(self._hello)]

    def handle(self, frame: Frame) -> list[Output]:
        """What follows from one frame from the relay."""
        event = _event_of(frame)
        if self.to_peer and not self.peer_device and event in (Event.BUNDLES, Event.CAUGHT_UP):
            raise ProtocolError("The peer sent bundles before proving which device it is.")
        self._move(event, f"a {frame.TYPE} frame")
        out: list[Output] = []
        match frame:
            case Welcome():
                out += self._welcomed(frame)
            case DeviceProof():
                out += self._peer_proved(frame)
            case Deliver() | Deliveries() | CaughtUp() if frame.topic in self.refused_topics:
                pass  # a topic we refused the peer (a device removed from that group)
            case Deliver():
                self.received += 1
                out.append(Arrived(frame.topic, frame.cursor, frame.envelope))
            case Deliveries():
                self.received += len(frame.envelopes)
                out += (Arrived(frame.topic, d.cursor, d.envelope) for d in frame.each())
            case CaughtUp():
                self.catching_up.discard(frame.topic)
                if frame.topic in self.awaiting_offer:
                    out.append(PeerHas(frame.topic, vector_from_wire(frame.have)))
            case Ack():
                self.in_flight.discard(frame.id)
                self._in_flight_frames.pop(frame.id, None)
                self.sent += 1
                out.append(Acked(frame.id, frame.cursor))
                out += self._fill()
            case Error():
                out += self._refused(frame)
            case (
                Hello()
                | Register()
                | Subscribe()
                | Publish()
                | Mailbox()
                | MailboxClose()
                | Peer()
                | Mirror()
                | Freeze()
            ):
                pass  # not this session's (Event.OTHER)
            case _:
                assert_never(frame)
        return out + self._check_settled()

    def _welcomed(self, welcome: Welcome) -> list[Output]:
        """Register every topic, prove our device to a peer, subscribe, start uploading."""
        if self.to_peer and welcome.version < DEVICE_PROOFS:
            raise ProtocolError(OLDER_PEER)
        registers: list[Output] = []
        subscribes: list[Output] = []
        for plan in self.plans:
            proof = plan.prove(welcome.challenge) if plan.prove else plan.proof
            registers.append(
                Send(Register(topic=plan.topic, relay_key=plan.relay_key, proof=proof))
            )
            if plan.freeze:
                registers.append(Send(Freeze(topic=plan.topic, proof=plan.freeze)))
            if plan.peer:
                have = vector_to_wire(plan.have)
                subscribes.append(Send(Subscribe(topic=plan.topic, after=0, have=have)))
                self.awaiting_offer.add(plan.topic)
                self.catching_up.add(plan.topic)
            elif plan.read:
                subscribe = Subscribe(
                    topic=plan.topic, after=plan.after, from_snapshot=plan.from_snapshot
                )
                subscribes.append(Send(subscribe))
                self.catching_up.add(plan.topic)
            self.queue.extend((i, Publish(envelope=e)) for i, e in plan.outgoing)
        if self.device_key is not None and self._hello is not None:
            self._transcript = transcript_of(self._hello, welcome)
            registers.append(Send(device_proof(self.device_key, self._transcript, CONNECTING)))
        return registers + subscribes + self._fill()

    def _peer_proved(self, frame: DeviceProof) -> list[Output]:
        """The peer's device proof: check it, and refuse the topics of groups that removed
        that device."""
        if not self.to_peer or self.peer_device:
            raise ProtocolError("A device proof arrived where none was due.")
        if not device_proof_valid(frame, self._transcript, ACCEPTING):
            raise ProtocolError("The peer's device proof does not verify.")
        self.peer_device = frame.device
        out: list[Output] = []
        for plan in self.plans:
            if frame.device in plan.departed:
                self.refused_topics.add(plan.topic)
                self.catching_up.discard(plan.topic)
                self.awaiting_offer.discard(plan.topic)
                message = "The peer is a device removed from this group; nothing was exchanged."
                out.append(Refused(plan.topic, "removed", message))
        return out

    def publish(self, bundles: Iterable[tuple[bytes, bytes]]) -> list[Output]:
        """New local bundles to send (live mode)."""
        self.queue.extend((i, Publish(envelope=e)) for i, e in bundles)
        self._move(Event.PUBLISH)
        return self._fill() if self.welcomed else []

    def offer(self, topic: bytes, bundles: Iterable[tuple[bytes, bytes]]) -> list[Output]:
        """The bundles a peer lacks, in answer to :class:`PeerHas`."""
        self.awaiting_offer.discard(topic)
        out = self.publish(bundles)
        return out + self._check_settled()

    def publish_snapshot(
        self, bundle_id: bytes, envelope: bytes, covers: int, proof: bytes
    ) -> list[Output]:
        """Send a snapshot that holds everything up to ``covers`` at this relay."""
        self.queue.append((bundle_id, Publish(envelope=envelope, covers=covers, cover_proof=proof)))
        self._move(Event.PUBLISH)
        return self._fill() if self.welcomed else []

    def resume(self) -> list[Output]:
        """Carry on after a pause (before the welcome, the queue waits for it)."""
        self._move(Event.RESUME)
        return self._fill() if self.welcomed else []

    def _refused(self, frame: Error) -> list[Output]:
        out: list[Output] = []
        if frame.id in self.catching_up:  # a topic the other side will not serve
            self.refused_topics.add(frame.id)
            self.catching_up.discard(frame.id)
            self.awaiting_offer.discard(frame.id)
        if frame.id and frame.id in self.in_flight:
            self.in_flight.discard(frame.id)
            if frame.code == "rate-limited":
                publish = self._in_flight_frames.pop(frame.id, None)
                if publish is not None:
                    self.queue.appendleft((frame.id, publish))
                return [Paused(1.0)]
        out.append(Refused(frame.id, frame.code, frame.message))
        return out + self._fill()

    def _fill(self) -> list[Output]:
        out: list[Output] = []
        while self.queue and len(self.in_flight) < WINDOW:
            bundle_id, publish = self.queue.popleft()
            self.in_flight.add(bundle_id)
            self._in_flight_frames[bundle_id] = publish
            out.append(Send(publish))
        return out

    def _check_settled(self) -> list[Output]:
        if (
            self.state is SessionState.EXCHANGING
            and not self.catching_up
            and not self.awaiting_offer
            and not self.queue
            and not self.in_flight
        ):
            self._move(Event.SETTLE)
            self._in_flight_frames.clear()
            return [Settled()]
        return []
