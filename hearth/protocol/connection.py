"""The sans-IO connection: frames in, events out; events in, frames out.

One :class:`Connection` per WebSocket, on either side. It enforces the order of the
exchange — the connecting side says :class:`Hello`, the accepting side answers
:class:`Welcome` with the version both speak, then either side sends what its role
allows — and turns every violation into a :class:`~hearth.errors.ProtocolError` with a
close code for the adapter to use. It never touches a socket, a clock or randomness.

All allowed frames per state and role are in one table, :data:`ALLOWED`.
"""

from __future__ import annotations

import enum

from hearth.errors import ProtocolError
from hearth.protocol.frames import (
    DELIVERIES,
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
    decode_frame,
    encode_frame,
)

__all__ = [
    "ALLOWED",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL",
    "CLOSE_TOO_BIG",
    "Connection",
    "Role",
    "State",
]

CLOSE_PROTOCOL = 1002  # WebSocket close code: protocol error
CLOSE_TOO_BIG = 1009  # message too big
CLOSE_POLICY = 1008  # policy violation (limits)


class Role(enum.Enum):
    """Which end of the connection this is."""

    CONNECTING = "connecting"  # a node dialing a relay or a peer
    ACCEPTING = "accepting"  # a relay, or a node's `serve` listener


class State(enum.Enum):
    """Where the exchange is."""

    START = "start"
    HELLO_SENT = "hello-sent"  # connecting side, waiting for Welcome
    HELLO_RECEIVED = "hello-received"  # accepting side, must answer Welcome
    OPEN = "open"
    CLOSED = "closed"


_FROM_CONNECTING = (
    Register,
    DeviceProof,
    Subscribe,
    Publish,
    Freeze,
    Error,
    Mailbox,
    MailboxClose,
)
_FROM_ACCEPTING = (DeviceProof, Deliver, Deliveries, CaughtUp, Ack, Error, Mailbox, MailboxClose)
_BETWEEN_RELAYS = (Peer, Mirror, Register, Deliver, CaughtUp, Error)
"""Once open, a link between peer relays (``hello`` with role ``relay``) carries these
either way: each side mirrors the other."""

ALLOWED: dict[tuple[Role, State, str], tuple[type[Frame], ...]] = {
    # (who is acting, state, "send" or "receive") -> frames allowed
    (Role.CONNECTING, State.START, "send"): (Hello,),
    (Role.CONNECTING, State.HELLO_SENT, "receive"): (Welcome, Error),
    (Role.CONNECTING, State.OPEN, "send"): _FROM_CONNECTING,
    (Role.CONNECTING, State.OPEN, "receive"): _FROM_ACCEPTING,
    (Role.ACCEPTING, State.START, "receive"): (Hello,),
    (Role.ACCEPTING, State.HELLO_RECEIVED, "send"): (Welcome, Error),
    (Role.ACCEPTING, State.OPEN, "send"): _FROM_ACCEPTING,
    (Role.ACCEPTING, State.OPEN, "receive"): _FROM_CONNECTING,
}
"""Every frame each side may send or receive in each state; anything else is an error."""

_NEXT: dict[tuple[State, type[Frame]], State] = {
    (State.START, Hello): State.HELLO_SENT,  # for CONNECTING; ACCEPTING overrides below
    (State.HELLO_SENT, Welcome): State.OPEN,
    (State.HELLO_RECEIVED, Welcome): State.OPEN,
}


class Connection:
    """One side of one connection's exchange."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = State.START
        self.version: int | None = None  # once the welcome passed
        self.agreed: int | None = None  # accepting side: the version to welcome with
        self.peer_role: str | None = None
        self.between_relays = False

    def send(self, frame: Frame, encoded: bytes | None = None) -> bytes:
        """The bytes to send for ``frame``, if the exchange allows it now.

        ``encoded`` is the frame's bytes when the caller has them already (one bundle
        fanned out to many connections is encoded once).
        """
        self._check(frame, "send")
        if isinstance(frame, Deliveries) and (self.version or 0) < DELIVERIES:
            raise ProtocolError(f"A deliveries frame to a side that speaks version {self.version}.")
        if isinstance(frame, Hello):
            self.between_relays = frame.role == "relay"
        if isinstance(frame, Welcome):
            self.version = frame.version
        self._advance(frame)
        return encoded if encoded is not None else encode_frame(frame)

    def receive(self, data: bytes) -> Frame:
        """The frame in ``data``, if well formed and allowed now."""
        if self.state is State.CLOSED:
            raise ProtocolError("A frame arrived after the connection was closed.")
        frame = decode_frame(data)
        self._check(frame, "receive")
        if isinstance(frame, Hello):
            common = set(frame.versions) & set(VERSIONS)
            if not common:
                raise ProtocolError(
                    f"The other side speaks versions {frame.versions}; this Hearth speaks "
                    f"{list(VERSIONS)}. Upgrade the older one."
                )
            self.agreed = max(common)
            self.peer_role = frame.role
            self.between_relays = frame.role == "relay"
            self.state = State.HELLO_RECEIVED
            return frame
        if isinstance(frame, Welcome):
            if frame.version not in VERSIONS:
                raise ProtocolError(f"The other side chose version {frame.version}.")
            self.version = frame.version
        if isinstance(frame, Error) and self.state is not State.OPEN:
            self.state = State.CLOSED
            return frame
        self._advance(frame)
        return frame

    def close(self) -> None:
        """Mark the connection closed; nothing more may pass."""
        self.state = State.CLOSED

    def _check(self, frame: Frame, direction: str) -> None:
        if self.between_relays and self.state is State.OPEN:
            allowed: tuple[type[Frame], ...] = _BETWEEN_RELAYS
        else:
            allowed = ALLOWED.get((self.role, self.state, direction), ())
        if not isinstance(frame, allowed):
            verb = "send" if direction == "send" else "receive"
            raise ProtocolError(
                f"Cannot {verb} a {frame.TYPE} frame now (connection {self.state.value})."
            )

    def _advance(self, frame: Frame) -> None:
        following = _NEXT.get((self.state, type(frame)))
        if following is not None:
            self.state = following
