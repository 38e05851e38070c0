"""A relay's own identity key: what peer relays know it by and check it with.

The key lives next to the store (``relay.key``, readable only by the relay's user) and is
made on first use. Its public half, as 64 hex digits, is the relay id that operators of
peer relays put in their ``accept_peers`` and after the address in their ``peers``. It
signs nothing but peering challenges: the dialing relay's answer to the accepting relay's
challenge, and the accepting relay's answer to the dialing relay's nonce (each side proves
its id to the other, under its own context so that one answer is never taken for the other).
"""

from __future__ import annotations

import os
from pathlib import Path

from hearth.crypto import SigningKey, verify
from hearth.errors import ConfigError

__all__ = [
    "KEY_FILE",
    "REPLACED_KEY_FILE",
    "acceptor_proof",
    "acceptor_proof_valid",
    "existing",
    "install",
    "load_or_create",
    "peer_proof",
    "peer_proof_valid",
]

KEY_FILE = "relay.key"
REPLACED_KEY_FILE = "relay.key.replaced"
"""Where a restore that changed the relay's id (``--force``) keeps the key it replaced."""
_CONTEXT = b"hearth-relay-peer-v1"
_ACCEPTOR_CONTEXT = b"hearth-relay-acceptor-v1"


def load_or_create(data_dir: Path) -> SigningKey:
    """The relay's identity key from ``data_dir``, made there if it does not exist yet."""
    path = data_dir / KEY_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate()
        partial = path.with_name(f"{KEY_FILE}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.secret)
            os.fsync(out.fileno())
        try:
            # Whole, and never over the key of another relay process starting beside us.
            os.link(partial, path)
        except FileExistsError:
            return load_or_create(data_dir)
        finally:
            partial.unlink()
        return key
    except OSError as exc:
        raise ConfigError(f"The relay's identity key {path} cannot be read ({exc}).") from exc
    if len(secret) != 32:
        raise ConfigError(
            f"The relay's identity key {path} is damaged ({len(secret)} bytes, not 32); "
            "restore it from a backup, or delete it to make a new id (peers must then "
            "accept the new id)."
        )
    return SigningKey(secret)


def existing(data_dir: Path) -> SigningKey | None:
    """The relay's identity key in ``data_dir``, if it has one (none is made)."""
    if not (data_dir / KEY_FILE).exists():
        return None
    return load_or_create(data_dir)


def install(data_dir: Path, secret: bytes) -> SigningKey:
    """Make ``secret`` the relay's identity key in ``data_dir`` (a restore), readable by
    the relay's user only; a different key there already is kept as
    :data:`REPLACED_KEY_FILE`, never simply lost."""
    key = SigningKey(secret)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    old = existing(data_dir)
    if old is not None and old.public == key.public:
        return key
    partial = path.with_name(f"{KEY_FILE}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
        os.fsync(out.fileno())
    if old is not None:
        os.replace(path, data_dir / REPLACED_KEY_FILE)
    os.replace(partial, path)
    return key


def peer_proof(key: SigningKey, challenge: bytes, acceptor: bytes) -> bytes:
    """The dialing relay's answer to an accepting relay's challenge."""
    return key.sign(_CONTEXT + challenge + acceptor)


def peer_proof_valid(relay_id: bytes, challenge: bytes, acceptor: bytes, proof: bytes) -> bool:
    """Whether ``proof`` shows that the dialer holds the key of ``relay_id``."""
    return verify(relay_id, proof, _CONTEXT + challenge + acceptor)


def acceptor_proof(key: SigningKey, nonce: bytes, challenge: bytes) -> bytes:
    """The accepting relay's answer to a dialing relay's ``nonce``, bound to the challenge it
    sends back in the same welcome."""
    return key.sign(_ACCEPTOR_CONTEXT + nonce + challenge)


def acceptor_proof_valid(relay_id: bytes, nonce: bytes, challenge: bytes, proof: bytes) -> bool:
    """Whether ``proof`` shows that the relay that welcomed us holds the key of ``relay_id``."""
    return verify(relay_id, proof, _ACCEPTOR_CONTEXT + nonce + challenge)
