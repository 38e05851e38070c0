"""The epoch op: a new group key, sealed to every device that stays (SECURITY.md §3, §5).

An admin who removes someone makes a fresh 32-byte secret, seals it to the X25519 key of
each remaining device, and publishes the op in their feed under the *old* epoch, so that
members who were offline during the removal find it where they last read. The op lists
the devices it leaves out; concurrent rotations are settled by :func:`preferred`.

The op also names the devices it is sealed to (``given``; members know the membership
anyway, and relays never see inside): a device that joined while the op was being made —
its invite older than the rotation, its claim read after — is in the group but not among
them, and an admin's node that sees this makes a new epoch that includes it.

A wrap may also carry older epochs' secrets to a device that was left out of them — by a
removal that did not count after all (SECURITY.md R7), or by joining meanwhile: without
them it could not read what others sealed under those epochs, nor anything after it in
their feeds.

Any member's device may also hand older epochs on to such a device in a *hand-on*: wraps
with only carried epochs. Without it, a device left out by a removal that did not count
could wait forever for what only the left-out epoch opens when the admins still in the
group are the ones left out — or hold none of it.

Pure: keys and randomness come in as arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hearth.crypto import KemKey, RandomBytes, open_sealed, seal_to
from hearth.errors import ProtocolError
from hearth.protocol import codec

__all__ = [
    "Carried",
    "EpochOp",
    "decode_epoch_op",
    "make_epoch_op",
    "make_hand_on",
    "open_hand_on",
    "preferred",
]

_MAX_WRAPS = 1000
_MAX_CARRIED = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Carried:
    """An older epoch handed on in a wrap: enough to open and judge what was sealed under it."""

    number: int
    epoch_id: bytes
    secret: bytes
    excluded: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochOp:
    """A new epoch as its creator publishes it."""

    number: int
    nonce: bytes
    excluded: tuple[bytes, ...]  # device keys (Ed25519) that must not hold the secret
    wraps: tuple[bytes, ...]  # the secret sealed to each remaining device, in no order
    # Device keys (Ed25519) of the devices the wraps are for; None from an op written
    # before ops named them (then taken as every device in the group).
    given: tuple[bytes, ...] | None = None

    def encode(self) -> bytes:
        """The op as a bundle payload."""
        fields: list[codec.Value] = [self.number, self.nonce, list(self.excluded), list(self.wraps)]
        if self.given is not None:
            fields.append(list(self.given))
        return codec.encode(fields)

    def epoch_id(self, group_id: bytes, creator: bytes) -> bytes:
        """The epoch's id: a hash of the op's identity, the same on every node."""
        return hashlib.sha256(
            codec.encode(["epoch", group_id, self.number, creator, self.nonce])
        ).digest()

    def secret_for(self, kem: KemKey) -> bytes | None:
        """The epoch secret if one of the wraps is for this device, else ``None``."""
        opened = self.open_for(kem)
        return None if opened is None else opened[0]

    def open_for(self, kem: KemKey) -> tuple[bytes, tuple[Carried, ...]] | None:
        """The epoch secret and the older epochs carried to this device, if a wrap is for
        it; a wrap whose carried part is damaged still gives the secret."""
        for wrap in self.wraps:
            opened = open_sealed(kem, wrap)
            if opened is not None and len(opened) >= 32:
                return opened[:32], _carried(opened[32:])
        return None


def make_epoch_op(
    *,
    number: int,
    secret: bytes,
    recipients: Mapping[bytes, bytes],
    excluded: Iterable[bytes],
    random_bytes: RandomBytes,
    carried: Mapping[bytes, Sequence[Carried]] | None = None,
) -> EpochOp:
    """An op sealing ``secret`` to each recipient (device key -> X25519 key), with the
    older epochs ``carried`` names (by X25519 key) for some of them."""
    carried = carried or {}

    def plaintext(kem: bytes) -> bytes:
        extra = carried.get(kem, ())
        return secret + _encode_carried(extra) if extra else secret

    return EpochOp(
        number=number,
        nonce=random_bytes(16),
        excluded=tuple(sorted(set(excluded))),
        wraps=tuple(
            seal_to(kem, plaintext(kem), random_bytes) for kem in sorted(set(recipients.values()))
        ),
        given=tuple(sorted(recipients)),
    )


def make_hand_on(handed: Mapping[bytes, Sequence[Carried]], random_bytes: RandomBytes) -> bytes:
    """A hand-on payload: for each X25519 key, the older epochs to hand on to that device."""
    return codec.encode(
        [
            seal_to(kem, _encode_carried(epochs), random_bytes)
            for kem, epochs in sorted(handed.items())
            if epochs
        ][:_MAX_WRAPS]
    )


def open_hand_on(payload: bytes, kem: KemKey) -> tuple[Carried, ...]:
    """The epochs a hand-on carries to this device (none if no wrap is for it), or
    :class:`ProtocolError` if the payload is malformed."""
    wraps = codec.decode(payload)
    if not (
        isinstance(wraps, list)
        and len(wraps) <= _MAX_WRAPS
        and all(isinstance(w, bytes) for w in wraps)
    ):
        raise ProtocolError("a hand-on of keys is malformed")
    for wrap in wraps:
        opened = open_sealed(kem, wrap) if isinstance(wrap, bytes) else None
        if opened is not None:
            return _carried(opened)
    return ()


def _encode_carried(epochs: Sequence[Carried]) -> bytes:
    # The newest: a device that joined meanwhile got the older ones with its invite.
    return codec.encode(
        [[c.number, c.epoch_id, c.secret, list(c.excluded)] for c in epochs[-_MAX_CARRIED:]]
    )


def _carried(data: bytes) -> tuple[Carried, ...]:
    if not data:
        return ()
    try:
        value = codec.decode(data)
    except ProtocolError:
        return ()
    found = []
    for item in value if isinstance(value, list) else []:
        if not (isinstance(item, list) and len(item) == 4):
            continue
        number, epoch_id, secret, excluded = item
        if (
            isinstance(number, int)
            and isinstance(epoch_id, bytes)
            and len(epoch_id) == 32
            and isinstance(secret, bytes)
            and len(secret) == 32
            and isinstance(excluded, list)
            and all(isinstance(e, bytes) for e in excluded)
        ):
            found.append(
                Carried(
                    number=number,
                    epoch_id=epoch_id,
                    secret=secret,
                    excluded=tuple(e for e in excluded if isinstance(e, bytes)),
                )
            )
    return tuple(found[:_MAX_CARRIED])


def decode_epoch_op(payload: bytes) -> EpochOp:
    """An epoch op from a bundle payload, or :class:`ProtocolError` saying what is wrong."""
    value = codec.decode(payload)
    if not (isinstance(value, list) and len(value) in (4, 5)):
        raise ProtocolError("an epoch op is malformed")
    number, nonce, excluded, wraps = value[:4]
    given = value[4] if len(value) == 5 else None
    if not (
        isinstance(number, int)
        and 0 < number < 2**31
        and isinstance(nonce, bytes)
        and isinstance(excluded, list)
        and all(isinstance(e, bytes) and len(e) == 32 for e in excluded)
        and isinstance(wraps, list)
        and len(wraps) <= _MAX_WRAPS
        and all(isinstance(w, bytes) for w in wraps)
        and (
            given is None
            or (
                isinstance(given, list)
                and len(given) <= _MAX_WRAPS
                and all(isinstance(g, bytes) and len(g) == 32 for g in given)
            )
        )
    ):
        raise ProtocolError("an epoch op has fields of the wrong type")
    return EpochOp(
        number=number,
        nonce=nonce,
        excluded=tuple(e for e in excluded if isinstance(e, bytes)),
        wraps=tuple(w for w in wraps if isinstance(w, bytes)),
        given=None if given is None else tuple(g for g in given if isinstance(g, bytes)),
    )


def preferred(candidates: Sequence[tuple[int, bytes, frozenset[bytes]]]) -> int:
    """Which of several epochs new bundles are sealed under: the index of the winner.

    ``candidates`` are (number, epoch id, excluded devices). The highest number wins; among
    rival epochs of one number (concurrent rotations), the one leaving out the most devices
    (a subset of members is safer than its superset), then the lowest epoch id. A winner
    that still includes a removed device is replaced by the next rotation.
    """
    if not candidates:
        raise ProtocolError("This node has no keys for the group; it cannot sync it.")
    return min(
        range(len(candidates)),
        key=lambda i: (-candidates[i][0], -len(candidates[i][2]), candidates[i][1]),
    )
