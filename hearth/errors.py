"""The one error tree of Hearth.

::

    HearthError                    anything Hearth reports to a member or operator
    ├── UsageError                 a command-line argument that cannot be used (bad date, quantity…)
    ├── IdentityError              no identity yet, a second init, unreadable key files
    ├── LedgerError                an entry that does not exist, an impossible transition…
    │   ├── NotFound               no entry (or no unique entry) for an id, prefix or name
    │   └── NotAuthorized          the member may not do this
    ├── StorageError               the local store is missing, damaged or not Hearth's
    ├── ProtocolError              a frame or bundle that breaks the wire rules
    │   ├── Damaged                bytes not as they were sent (transit, or a relay lying)
    │   └── FrameTooBig            a frame over the size limit (closed with 1009)
    ├── TransportError             a relay or peer that cannot be reached
    └── ConfigError                a configuration file or setting that cannot be used

Every message is a sentence a member can act on; the CLI and the TUI print it as is.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Damaged",
    "FrameTooBig",
    "HearthError",
    "IdentityError",
    "LedgerError",
    "NotAuthorized",
    "NotFound",
    "ProtocolError",
    "StorageError",
    "TransportError",
    "UsageError",
]


class HearthError(Exception):
    """Base of every error Hearth raises on purpose; ``str(err)`` is shown to the member."""


class UsageError(HearthError):
    """A value given on the command line (or in a form) that cannot be used."""


class IdentityError(HearthError):
    """Something wrong with this node's identity: missing, already there, unreadable."""


class LedgerError(HearthError):
    """A ledger operation that cannot be done, such as an impossible status change."""


class NotFound(LedgerError):
    """No entry, or more than one, matches the id, prefix or name given."""


class NotAuthorized(LedgerError):
    """The acting member is not allowed to make this change."""


class StorageError(HearthError):
    """The local store cannot be opened, read or written."""


class ProtocolError(HearthError):
    """Bytes from outside that break the wire format or the bundle rules."""


class Damaged(ProtocolError):
    """Bytes that are not what their sender sent: a bundle that fails its format, its
    relay's admission signature or its decryption. Damage in transit, or a relay lying —
    never a verdict on the bundle itself, which may arrive whole by another path (R16)."""


class FrameTooBig(ProtocolError):
    """A frame over the frame size limit: the connection is closed with 1009 (too big)."""


class TransportError(HearthError):
    """A relay or peer could not be reached or dropped the connection."""


class ConfigError(HearthError):
    """A configuration file or setting that cannot be used."""
