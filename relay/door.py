"""The door every accepted socket passes (:mod:`hearth.door`, shared with a node's direct
listener): counted against the connection limits and timed out until its handshake is done."""

from __future__ import annotations

from hearth.door import Door, Doorway

__all__ = ["Door", "Doorway"]
