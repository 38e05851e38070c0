"""Joining a group with a one-shot token (SECURITY.md §5, the fallback to invite codes).

The inviter's node records an *invite* in the ledger — an id, the public half of a fresh
one-use key, an expiry — and prints a token holding what a new member needs: the group's
founding record, its epoch secrets, its relays, and the secret half of that key. The
joiner's first bundle carries a *claim*: its member and device keys and actor ids, signed
with the invite key. Other members accept the new device because the claim verifies
against an invite an admin recorded, not yet claimed by anyone else.

The token holds the group's secrets: it should travel the way a house key would.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from hearth.crypto import SigningKey, verify
from hearth.errors import ProtocolError, UsageError
from hearth.protocol import codec

__all__ = [
    "DEVICE_PREFIX",
    "Claim",
    "DeviceToken",
    "Token",
    "decode_claim",
    "decode_device_token",
    "decode_token",
    "encode_device_token",
    "encode_token",
    "is_token",
    "make_claim",
]

_PREFIX = "hearth-token-1."
DEVICE_PREFIX = "hearth-device-1."
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9_-]")
_TOKEN_SUM = b"hearth/v1/token-checksum\x00"
_CLAIM_SIGNED = b"hearth/v1/invite-claim\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """Everything a new member needs to join, in one printable string."""

    group_id: str
    group_name: str
    genesis: bytes
    epochs: tuple[tuple[int, bytes, bytes], ...]  # (number, epoch id, secret)
    relays: tuple[str, ...]
    invite_id: str
    invite_secret: bytes
    expires_at: int
    # The invite's own ``join_not_before`` (when it was made, by the inviter's clock): a
    # joining device dates its joining no earlier, or its claim does not count (R7a).
    # 0 in a token made before it was carried.
    join_not_before: int = 0

    def __repr__(self) -> str:  # never print secrets
        return f"Token(group={self.group_name!r}, invite={self.invite_id[:8]})"


def _as_text(prefix: str, body: bytes) -> str:
    return prefix + base64.urlsafe_b64encode(body).decode().rstrip("=")


def is_token(text: str) -> bool:
    """Whether ``text`` holds a join token (rather than an invite code)."""
    return _PREFIX in text


def _from_text(text: str, prefix: str, damaged: str) -> codec.Value:
    """The encoded value after ``prefix``, or :class:`UsageError` with ``damaged``.

    What a copy from a terminal brings along is ignored: line breaks and spaces where the
    text wrapped, the frame the app draws around it, quotes.
    """
    raw = _NOT_BASE64.sub("", text.split(prefix, 1)[-1])
    try:
        return codec.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, ProtocolError):
        raise UsageError(damaged) from None


def encode_token(token: Token) -> str:
    """The token as text a member can copy, ending in a checksum of what comes before."""
    fields: list[codec.Value] = [
        1,
        token.group_id,
        token.group_name,
        token.genesis,
        [list(e) for e in token.epochs],
        list(token.relays),
        token.invite_id,
        token.invite_secret,
        token.expires_at,
        token.join_not_before,
    ]
    return _as_text(_PREFIX, codec.encode([*fields, _checksum(fields)]))


def _checksum(fields: list[codec.Value]) -> bytes:
    """Four bytes that change with any change to a token's fields: a token damaged where
    it still decodes is told apart from a good one at once, not by a puzzling failure later."""
    return hashlib.sha256(_TOKEN_SUM + codec.encode(fields)).digest()[:4]


def decode_token(text: str) -> Token:
    """A token from its text, or :class:`UsageError` saying why it is not one."""
    if not is_token(text):
        raise UsageError("That is not a Hearth join token (it should start 'hearth-token-1.').")
    damaged = "The join token is damaged; copy it again in full."
    value = _from_text(text, _PREFIX, damaged)
    if not (isinstance(value, list) and len(value) in (9, 10, 11) and value[0] == 1):
        raise UsageError("The join token is damaged or from another version of Hearth.")
    # Nine fields: made before checksums; ten: before the invite's time was carried.
    if len(value) > 9 and value[-1] != _checksum(value[:-1]):
        raise UsageError(damaged)
    _, group_id, name, genesis, epochs, relays, invite_id, secret, expires = value[:9]
    invited = value[9] if len(value) == 11 else 0
    epochs_ok = isinstance(epochs, list) and all(
        isinstance(e, list)
        and len(e) == 3
        and isinstance(e[0], int)
        and isinstance(e[1], bytes)
        and isinstance(e[2], bytes)
        for e in epochs
    )
    if not (
        isinstance(group_id, str)
        and isinstance(name, str)
        and isinstance(genesis, bytes)
        and epochs_ok
        and isinstance(relays, list)
        and all(isinstance(r, str) for r in relays)
        and isinstance(invite_id, str)
        and isinstance(secret, bytes)
        and len(secret) == 32
        and isinstance(expires, int)
        and isinstance(invited, int)
    ):
        raise UsageError(damaged)
    return Token(
        group_id=group_id,
        group_name=name,
        genesis=genesis,
        epochs=tuple((e[0], e[1], e[2]) for e in epochs),
        relays=tuple(str(r) for r in relays),
        invite_id=invite_id,
        invite_secret=secret,
        expires_at=expires,
        join_not_before=invited,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceToken:
    """What a member's new device needs: the join token, and the member's own key and
    name, so the device writes as that member. Only ever sent sealed in an invite
    exchange, never printed."""

    token: Token
    member_secret: bytes
    member_name: str

    def __repr__(self) -> str:  # never print secrets
        return f"DeviceToken(member={self.member_name!r})"


def encode_device_token(device: DeviceToken) -> str:
    """A device token as text for the sealed invite exchange."""
    body = codec.encode([1, encode_token(device.token), device.member_secret, device.member_name])
    return _as_text(DEVICE_PREFIX, body)


def decode_device_token(text: str) -> DeviceToken:
    """A device token from its text, or :class:`UsageError` saying why it is not one."""
    value = _from_text(
        text.strip(), DEVICE_PREFIX, "The new device's keys arrived damaged; try again."
    )
    if not (
        isinstance(value, list)
        and len(value) == 4
        and value[0] == 1
        and isinstance(value[1], str)
        and isinstance(value[2], bytes)
        and len(value[2]) == 32
        and isinstance(value[3], str)
    ):
        raise UsageError("The new device's keys arrived damaged; try again.")
    return DeviceToken(token=decode_token(value[1]), member_secret=value[2], member_name=value[3])


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A joining device's claim to an invite."""

    invite_id: str
    member_key: bytes
    member_name: str
    device_key: bytes
    actors: tuple[bytes, ...]
    signature: bytes

    def body(self) -> bytes:
        """The signed part."""
        return codec.encode(
            [self.invite_id, self.member_key, self.member_name, self.device_key, list(self.actors)]
        )

    def verifies(self, invite_public_key: bytes) -> bool:
        """Whether the claim is signed by the invite's key."""
        return verify(invite_public_key, self.signature, _CLAIM_SIGNED + self.body())


def make_claim(
    token: Token,
    *,
    member_key: bytes,
    member_name: str,
    device_key: bytes,
    actors: tuple[bytes, ...],
) -> bytes:
    """The encoded claim a joining device puts on its first bundle."""
    unsigned = Claim(
        invite_id=token.invite_id,
        member_key=member_key,
        member_name=member_name,
        device_key=device_key,
        actors=actors,
        signature=b"",
    )
    signature = SigningKey(token.invite_secret).sign(_CLAIM_SIGNED + unsigned.body())
    return codec.encode([unsigned.body(), signature])


def decode_claim(data: bytes) -> Claim:
    """A claim from a bundle, or :class:`ProtocolError`."""
    value = codec.decode(data)
    if not (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], bytes)
        and isinstance(value[1], bytes)
    ):
        raise ProtocolError("A join claim is malformed.")
    fields = codec.decode(value[0])
    if not (isinstance(fields, list) and len(fields) == 5):
        raise ProtocolError("A join claim is malformed.")
    invite_id, member_key, name, device_key, actors = fields
    if not (
        isinstance(invite_id, str)
        and isinstance(member_key, bytes)
        and isinstance(name, str)
        and isinstance(device_key, bytes)
        and isinstance(actors, list)
        and all(isinstance(a, bytes) for a in actors)
    ):
        raise ProtocolError("A join claim has fields of the wrong type.")
    return Claim(
        invite_id=invite_id,
        member_key=member_key,
        member_name=name,
        device_key=device_key,
        actors=tuple(a for a in actors if isinstance(a, bytes)),
        signature=value[1],
    )
