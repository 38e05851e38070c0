"""This node's identity: the member's key, this device's keys and the certificate binding them.

Kept as files in the node home (SECURITY.md §3)::

    identity.json          names, public keys, the device certificate (0600, as the whole home)
    keys/member.key        the member's Ed25519 secret (0600)
    keys/device.key        this device's Ed25519 secret (0600)
    keys/device-kem.key    this device's X25519 secret (0600)

``identity.json`` is written last and never overwritten, so a second ``init`` fails
instead of replacing keys, and an interrupted ``init`` leaves nothing that looks usable.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from hearth.crypto import KemKey, RandomBytes, SigningKey, key_id, verify
from hearth.errors import IdentityError
from hearth.store.home import make_private
from hearth.values import check_text

__all__ = ["Identity", "create_identity", "has_identity", "load_identity"]

_IDENTITY_FILE = "identity.json"
_KEY_FILES = {"member": "member.key", "device": "device.key", "kem": "device-kem.key"}
_CERT_CONTEXT = b"hearth/v1/device-certificate\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who this node acts as: one member, through this one device."""

    name: str
    device_name: str
    member_key: SigningKey
    device_key: SigningKey
    kem_key: KemKey
    certificate: bytes  # member's signature over the device's public keys

    @property
    def member_id(self) -> str:
        """The member's id: derived from the member public key."""
        return key_id(self.member_key.public)

    @property
    def device_id(self) -> str:
        """This device's id: derived from the device's signing key."""
        return key_id(self.device_key.public)

    def public(self) -> dict[str, str]:
        """The public part, as shown by ``whoami`` and written to ``identity.json``."""
        return {
            "name": self.name,
            "member_id": self.member_id,
            "member_key": self.member_key.public.hex(),
            "device_id": self.device_id,
            "device_name": self.device_name,
            "device_key": self.device_key.public.hex(),
            "device_kem_key": self.kem_key.public.hex(),
            "certificate": self.certificate.hex(),
        }


def _certificate_message(member_pk: bytes, device_pk: bytes, kem_pk: bytes, name: str) -> bytes:
    return _CERT_CONTEXT + member_pk + device_pk + kem_pk + name.encode()


def create_identity(
    home: Path,
    *,
    name: str,
    device_name: str | None = None,
    random_bytes: RandomBytes = secrets.token_bytes,
    member: SigningKey | None = None,
    device: SigningKey | None = None,
) -> Identity:
    """Create a member and device identity in ``home``; refuse if one exists.

    ``member`` is given for another device of an existing member (``hearth device add``);
    ``device`` when the device key had to exist before the identity (to prove it in an
    invite exchange).
    """
    name = check_text(name, "name")
    device_name = check_text(device_name or os.uname().nodename or "this device", "device name")
    if (home / _IDENTITY_FILE).exists():
        raise IdentityError(
            f"There is already an identity in {home}; Hearth never overwrites keys. "
            "Use another --home to make a second one."
        )
    member = member or SigningKey.generate(random_bytes)
    device = device or SigningKey.generate(random_bytes)
    kem = KemKey.generate(random_bytes)
    certificate = member.sign(
        _certificate_message(member.public, device.public, kem.public, device_name)
    )
    identity = Identity(
        name=name,
        device_name=device_name,
        member_key=member,
        device_key=device,
        kem_key=kem,
        certificate=certificate,
    )
    make_private(home)
    keys = home / "keys"
    keys.mkdir(exist_ok=True, mode=0o700)
    for role, secret in (("member", member.secret), ("device", device.secret), ("kem", kem.secret)):
        _write_secret(keys / _KEY_FILES[role], secret)
    body = json.dumps({"version": 1, **identity.public()}, indent=2).encode()
    try:
        fd = os.open(home / _IDENTITY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(f"There is already an identity in {home}.") from None
    with os.fdopen(fd, "wb") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    return identity


def _write_secret(path: Path, secret: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def has_identity(home: Path) -> bool:
    """Whether ``home`` holds an identity."""
    return (home / _IDENTITY_FILE).is_file()


def load_identity(home: Path) -> Identity:
    """Read the identity in ``home``, checking keys against the certificate."""
    path = home / _IDENTITY_FILE
    if not path.is_file():
        raise IdentityError(f"No identity in {home} yet: run `hearth init --name YOUR-NAME` first.")
    try:
        public = json.loads(path.read_text())
        secrets = {role: (home / "keys" / f).read_bytes() for role, f in _KEY_FILES.items()}
        identity = Identity(
            name=str(public["name"]),
            device_name=str(public["device_name"]),
            member_key=SigningKey(secrets["member"]),
            device_key=SigningKey(secrets["device"]),
            kem_key=KemKey(secrets["kem"]),
            certificate=bytes.fromhex(public["certificate"]),
        )
        matches = (
            identity.member_key.public.hex() == public["member_key"]
            and identity.device_key.public.hex() == public["device_key"]
            and identity.kem_key.public.hex() == public["device_kem_key"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"The identity in {home} cannot be read ({exc}).") from exc
    message = _certificate_message(
        identity.member_key.public,
        identity.device_key.public,
        identity.kem_key.public,
        identity.device_name,
    )
    if not matches or not verify(identity.member_key.public, identity.certificate, message):
        raise IdentityError(
            f"The key files in {home / 'keys'} do not match identity.json; "
            "they may have been replaced or damaged."
        )
    return identity
