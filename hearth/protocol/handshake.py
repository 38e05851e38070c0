"""Device proofs between two nodes of a group (SECURITY.md §5, LAN).

A direct connection starts with a handshake only holders of the group's epoch secret
complete (the registration answers the accepting node's fresh challenge, see
:func:`hearth.protocol.bundle.peer_proof`); then each side signs the **transcript** — the
connecting side's :class:`~hearth.protocol.frames.Hello`, which carries its fresh nonce,
and the accepting side's :class:`~hearth.protocol.frames.Welcome`, which carries its
fresh challenge — with its device key. So each knows which device it talks to, a proof
cannot be replayed on another connection, and a device the group removed (which may still
hold the epoch secret until the next key reaches everyone) is turned away by either side.

Pure functions: keys come in as arguments.
"""

from __future__ import annotations

import hashlib

from hearth.crypto import SigningKey, verify
from hearth.protocol.frames import DeviceProof, Hello, Welcome, encode_frame

__all__ = [
    "ACCEPTING",
    "CONNECTING",
    "OLDER_PEER",
    "device_proof",
    "device_proof_valid",
    "transcript",
]

_TRANSCRIPT = b"hearth/v1/peer-transcript\x00"
CONNECTING = b"connecting"
ACCEPTING = b"accepting"
OLDER_PEER = (
    "The other node runs an older Hearth that cannot prove which device it is: upgrade it "
    "to sync directly (through a relay the two still sync)."
)
"""Why two nodes do not sync directly when one speaks a version before DEVICE_PROOFS."""


def transcript(hello: Hello, welcome: Welcome) -> bytes:
    """The digest both sides sign: the two opening frames, in their canonical encoding."""
    digest = hashlib.sha256(_TRANSCRIPT)
    for frame in (hello, welcome):
        data = encode_frame(frame)
        digest.update(len(data).to_bytes(4, "big") + data)
    return digest.digest()


def device_proof(device_key: SigningKey, digest: bytes, side: bytes) -> DeviceProof:
    """Our device's proof for this connection; ``side`` is :data:`CONNECTING` or
    :data:`ACCEPTING`, so one side's proof is never taken for the other's."""
    return DeviceProof(device=device_key.public, proof=device_key.sign(_signed(digest, side)))


def device_proof_valid(frame: DeviceProof, digest: bytes, side: bytes) -> bool:
    """Whether the other side's proof is its device's signature over this transcript."""
    return verify(frame.device, frame.proof, _signed(digest, side))


def _signed(digest: bytes, side: bytes) -> bytes:
    return _TRANSCRIPT + side + b"\x00" + digest
