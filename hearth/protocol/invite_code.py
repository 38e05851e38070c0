"""Invite codes read aloud (SECURITY.md §5), as a pure state machine on each side.

The inviter's node opens a mailbox at a relay under a number (the *nameplate*) and
shows a code such as ``7-orchard-lantern-cobalt``: the nameplate and three words (24
bits). The joiner types it. Both run SPAKE2 with the whole code as the password through
the mailbox, then confirm the key: a wrong code fails on both sides (and the adapter
burns the mailbox), so a relay that sees every message learns nothing and gets one guess.

After confirmation both screens show the same four-word verification phrase. The joiner
introduces itself (its name and device key, signed over this exchange's key, so it proves
it holds the key); the inviter approves by name and sends the join token — everything a
new member needs (``hearth.protocol.invite_token``) — encrypted under the exchange's key. From there
joining is the same as with a printed token.

Bytes in, events out: :meth:`InviteExchange.receive` takes one mailbox message, and the
adapter carries :class:`Send` bodies to the mailbox. Randomness is passed in.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from spake2 import SPAKE2_Symmetric

from hearth.crypto import SigningKey, aead_open, aead_seal, hkdf, verify
from hearth.errors import ProtocolError, UsageError
from hearth.protocol import codec
from hearth.protocol.words import V1_WORDS, WORD_INDEX, WORDS

__all__ = [
    "MAX_NAMEPLATE",
    "Failed",
    "InviteCode",
    "InviteExchange",
    "JoinerIntroduced",
    "Send",
    "TokenReceived",
    "Verified",
    "parse_code",
]

MAX_NAMEPLATE = 999
CODE_WORDS = 3
PHRASE_WORDS = 4
_PAKE, _CONFIRM, _SEALED, _WRONG = b"P", b"C", b"E", b"X"
_INTRO_SIGNED = b"hearth/v1/invite-intro\x00"


@dataclass(frozen=True, slots=True)
class InviteCode:
    """A nameplate (the mailbox's number at the relay) and three words."""

    nameplate: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return "-".join([str(self.nameplate), *self.words])

    @classmethod
    def new(cls, nameplate: int, random_bytes: Callable[[int], bytes]) -> InviteCode:
        """A fresh code for a mailbox."""
        return cls(nameplate, tuple(WORDS[b] for b in random_bytes(CODE_WORDS)))


def parse_code(text: str) -> InviteCode:
    """A code as typed — spaces or dashes, any case — or a plain error."""
    parts = [p for p in text.strip().lower().replace(" ", "-").split("-") if p]
    if len(parts) != 1 + CODE_WORDS or not parts[0].isdigit():
        raise UsageError(f"{text!r} is not an invite code; it looks like 7-orchard-lantern-cobalt.")
    unknown = [w for w in parts[1:] if w not in WORD_INDEX]
    if unknown:
        raise UsageError(f"'{unknown[0]}' is not one of the invite words; check the spelling.")
    nameplate = int(parts[0])
    if not 1 <= nameplate <= MAX_NAMEPLATE:
        raise UsageError(f"{text!r} is not an invite code: the number is out of range.")
    return InviteCode(nameplate, tuple(parts[1:]))


@dataclass(frozen=True, slots=True)
class Send:
    """Put this message in the mailbox."""

    body: bytes


@dataclass(frozen=True, slots=True)
class Verified:
    """Both sides hold the same key: show this phrase; they must match on both screens."""

    phrase: str


@dataclass(frozen=True, slots=True)
class JoinerIntroduced:
    """(Inviter) who wants to join: ask the member to approve them by name."""

    name: str
    device_key: bytes


@dataclass(frozen=True, slots=True)
class TokenReceived:
    """(Joiner) the inviter approved: join with this token."""

    token: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The exchange is over without a join; say why, and close the mailbox."""

    reason: str


Event = Union[Send, Verified, JoinerIntroduced, TokenReceived, Failed]  # noqa: UP007


class _State(enum.Enum):
    WAIT_PAKE = "wait-pake"
    WAIT_CONFIRM = "wait-confirm"
    OPEN = "open"
    DONE = "done"


class InviteExchange:
    """One side of one invite: ``inviter=True`` on the node that showed the code."""

    def __init__(
        self,
        code: InviteCode,
        *,
        inviter: bool,
        random_bytes: Callable[[int], bytes],
        name: str = "",
        device: SigningKey | None = None,
    ) -> None:
        """The joiner passes its ``name`` and ``device`` key, to introduce itself."""
        self.inviter = inviter
        self.name = name
        self.device = device
        self.state = _State.WAIT_PAKE
        self._pake = SPAKE2_Symmetric(
            str(code).encode(), idSymmetric=b"hearth/v1/invite", entropy_f=random_bytes
        )
        self._key = b""
        self._sent = 0
        self._received = 0

    def start(self) -> list[Event]:
        """The first message: this side's SPAKE2 half."""
        return [Send(_PAKE + self._pake.start())]

    def receive(self, body: bytes) -> list[Event]:
        """What follows from one message from the other side."""
        if self.state is _State.DONE:
            return []
        if body[:1] == _WRONG:
            self.state = _State.DONE
            return [Failed("The other side says the code was wrong. Ask for a new one.")]
        try:
            if self.state is _State.WAIT_PAKE and body[:1] == _PAKE:
                return self._on_pake(body[1:])
            if self.state is _State.WAIT_CONFIRM and body[:1] == _CONFIRM:
                return self._on_confirm(body[1:])
            if self.state is _State.OPEN and body[:1] == _SEALED:
                return self._on_sealed(body[1:])
        except (ValueError, ProtocolError):
            pass
        return self._fail("The invite exchange went wrong (a damaged or unexpected message).")

    def approve(self, token: str) -> list[Event]:
        """(Inviter) let the joiner in: send the token."""
        self.state = _State.DONE
        return [Send(self._seal(codec.encode(["token", token])))]

    def refuse(self) -> list[Event]:
        """(Inviter) do not let them in."""
        self.state = _State.DONE
        return [Send(self._seal(codec.encode(["refused", ""])))]

    # --- the steps ------------------------------------------------------------------------

    def _on_pake(self, message: bytes) -> list[Event]:
        try:
            self._key = self._pake.finish(message)
        except Exception as exc:
            raise ProtocolError("a damaged key-exchange message") from exc
        self.state = _State.WAIT_CONFIRM
        return [Send(_CONFIRM + self._confirmation(self.inviter))]

    def _on_confirm(self, confirmation: bytes) -> list[Event]:
        if not hmac.compare_digest(confirmation, self._confirmation(not self.inviter)):
            return self._fail("The code was wrong, so the invite is used up. Ask for a new one.")
        self.state = _State.OPEN
        events: list[Event] = [Verified(self._phrase())]
        if not self.inviter:
            assert self.device is not None
            proof = self.device.sign(_INTRO_SIGNED + self._binding())
            intro = codec.encode(["intro", self.name, self.device.public, proof])
            events.append(Send(self._seal(intro)))
        return events

    def _on_sealed(self, sealed: bytes) -> list[Event]:
        message = codec.decode(self._open(sealed))
        if not (isinstance(message, list) and len(message) >= 2 and isinstance(message[0], str)):
            raise ProtocolError("malformed")
        kind = message[0]
        if self.inviter and kind == "intro" and len(message) == 4:
            _, name, device_key, proof = message
            if not (isinstance(name, str) and isinstance(device_key, bytes)):
                raise ProtocolError("malformed")
            if not (
                isinstance(proof, bytes)
                and verify(device_key, proof, _INTRO_SIGNED + self._binding())
            ):
                return self._fail("The joining device could not prove its key.")
            return [JoinerIntroduced(name.strip()[:80] or "someone", device_key)]
        if not self.inviter and kind == "token" and isinstance(message[1], str):
            self.state = _State.DONE
            return [TokenReceived(message[1])]
        if not self.inviter and kind == "refused":
            self.state = _State.DONE
            return [Failed("The inviter did not let you in.")]
        raise ProtocolError("unexpected")

    # --- keys -----------------------------------------------------------------------------

    def _confirmation(self, from_inviter: bool) -> bytes:
        label = b"inviter" if from_inviter else b"joiner"
        return hmac.new(
            hkdf(self._key, b"hearth/v1/invite/confirm"), label, hashlib.sha256
        ).digest()

    def _binding(self) -> bytes:
        return hkdf(self._key, b"hearth/v1/invite/binding")

    def _phrase(self) -> str:
        # The first word list, so that both sides show the same phrase whichever Hearth
        # each runs (see hearth.protocol.words).
        return " ".join(
            V1_WORDS[b] for b in hkdf(self._key, b"hearth/v1/invite/phrase")[:PHRASE_WORDS]
        )

    def _message_key(self, from_inviter: bool, number: int) -> bytes:
        side = b"inviter" if from_inviter else b"joiner"
        return hkdf(self._key, b"hearth/v1/invite/message/" + side + number.to_bytes(4, "big"))

    def _seal(self, plaintext: bytes) -> bytes:
        key = self._message_key(self.inviter, self._sent)
        self._sent += 1
        return _SEALED + aead_seal(key, plaintext, b"")

    def _open(self, sealed: bytes) -> bytes:
        key = self._message_key(not self.inviter, self._received)
        self._received += 1
        plaintext = aead_open(key, sealed, b"")
        if plaintext is None:
            raise ProtocolError("undecryptable")
        return plaintext

    def _fail(self, reason: str) -> list[Event]:
        """Give up, and tell the other side so it gives up too."""
        self.state = _State.DONE
        return [Send(_WRONG), Failed(reason)]
