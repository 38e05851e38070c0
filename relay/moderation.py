"""What an operator decides about a public relay: topics frozen or dropped, client keys
and address ranges banned, and (in allow-list mode) the keys allowed to register.

The decisions live in the store, next to what they govern, so ``hearth-relay`` run on
the host changes them while the relay runs, on either store and for every relay process
sharing one: each action appends a line to ``moderation_log``, and a relay that sees the
log grow (it looks every few seconds, and at once on SIGHUP) reads the lists again. The
log is also the audit trail, and the relay counts its lines by action.

What an operator sees and names here is what the relay sees anyway: topic ids (random,
and new at every member removal), sizes and times, relay keys, addresses. Nothing here
reads a bundle or tells who is in a group.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from relay.forwarded import IPV6_CLIENT_PREFIX, Proxies, parse_networks

__all__ = [
    "ACTIONS",
    "LISTS",
    "TAG_PREFIX",
    "Decisions",
    "ModerationError",
    "TopicInfo",
    "invite_digest",
    "moderate",
    "parse_target",
]

LISTS = ("ban", "allow", "drop", "invite")
"""The kinds of entry in the ``moderation`` table: a banned key or address range, a key
allowed to register (allow-list mode), a dropped topic kept out, an admission invite (the
SHA-256 of its code: the store never holds a code a group could be admitted with)."""

TAG_PREFIX = "tag:"
"""A ban on a client as the relay's log shows it (``client``: a tag that changes daily,
relay/logs.py): the relay refuses whoever has that tag, for as long as the tag lasts."""

ACTIONS = (
    "freeze",
    "unfreeze",
    "drop",
    "ban",
    "unban",
    "allow",
    "disallow",
    "invite",
    "uninvite",
)
"""What ``hearth-relay`` can do, as logged in ``moderation_log``."""

Rows = list[tuple[Any, ...]]


class ModerationError(ValueError):
    """A moderation target that is not what the action needs."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as ``hearth-relay topics`` shows it (times: seconds since the epoch, 0 if
    not known — topics from before they were kept)."""

    topic: bytes
    bytes: int
    bundles: int
    first_seen: float
    last_write: float
    held: bool  # frozen by the operator
    frozen_at: float  # frozen by the group itself (a member removal), from then on
    kept_out: bool = False


@dataclass(frozen=True)
class Decisions:
    """The moderation lists as a relay applies them."""

    banned_keys: frozenset[bytes] = frozenset()
    banned: Proxies = field(default_factory=Proxies)  # address ranges (a network list)
    banned_tags: frozenset[str] = frozenset()  # clients as today's log shows them
    allowed_keys: frozenset[bytes] = frozenset()
    dropped: frozenset[bytes] = frozenset()
    invites: frozenset[str] = frozenset()  # SHA-256 (hex) of admission codes

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str]]) -> Decisions:
        """From the ``moderation`` table's (kind, value) rows."""
        keys: set[bytes] = set()
        tags: set[str] = set()
        ranges: list[str] = []
        allowed: set[bytes] = set()
        dropped: set[bytes] = set()
        invites: set[str] = set()
        for kind, value in rows:
            if kind == "ban" and _is_key(value):
                keys.add(bytes.fromhex(value))
            elif kind == "ban" and value.startswith(TAG_PREFIX):
                tags.add(value.removeprefix(TAG_PREFIX))
            elif kind == "ban":
                ranges.append(value)
            elif kind == "allow":
                allowed.add(bytes.fromhex(value))
            elif kind == "drop":
                dropped.add(bytes.fromhex(value))
            elif kind == "invite":
                invites.add(value)
        return cls(
            frozenset(keys),
            Proxies.of(ranges),
            frozenset(tags),
            frozenset(allowed),
            frozenset(dropped),
            frozenset(invites),
        )

    def address_banned(self, address: str, tag: Callable[[str], str] | None = None) -> bool:
        """Whether a client address is in a banned range, or (given how the log tags
        addresses) has a banned tag."""
        if address in self.banned:
            return True
        return bool(self.banned_tags) and tag is not None and tag(address) in self.banned_tags


def _is_key(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) == 32
    except ValueError:
        return False


def invite_digest(code: str) -> str:
    """What the store keeps of an admission invite's code."""
    return hashlib.sha256(code.strip().encode()).hexdigest()


def parse_target(action: str, target: str) -> str:
    """The target of an action in the form it is stored in: 64 hex digits for a topic or
    a key, a network (``198.51.100.0/24``) for an address range, a digest for an invite."""
    if action in ("invite", "uninvite"):
        return invite_digest(target)
    target = target.strip().lower()
    if action in ("freeze", "unfreeze", "drop", "allow", "disallow"):
        if not _is_key(target):
            what = "a topic id" if action in ("freeze", "unfreeze", "drop") else "a relay key"
            raise ModerationError(f"{target!r} is not {what} (64 hex digits).")
        return target
    if _is_key(target):
        return target
    if re.fullmatch(r"(tag:)?[0-9a-f]{12}", target):
        return TAG_PREFIX + target.removeprefix(TAG_PREFIX)
    networks, bad = parse_networks([target])
    if bad:
        raise ModerationError(
            f"{target!r} is neither a key (64 hex digits), a client's tag from today's log "
            "(12 hex digits) nor an address or range (such as 198.51.100.7 or 198.51.100.0/24)."
        )
    network = networks[0]
    if isinstance(network, ipaddress.IPv6Network) and "/" not in target:
        # One IPv6 address is one of a whole /64 its client may move within.
        network = network.supernet(new_prefix=IPV6_CLIENT_PREFIX)
    if network.prefixlen < (8 if isinstance(network, ipaddress.IPv4Network) else 16):
        raise ModerationError(f"{target!r} is too wide a range to ban.")
    return str(network)


def moderate(
    run: Callable[[str, tuple[Any, ...]], Rows],
    placeholder: str,
    action: str,
    target: str,
    reason: str,
    now: float,
) -> bool:
    """Carry out one action inside the write transaction a store holds (``run`` as for
    :func:`relay.store_sql.prune_superseded`), and log it; whether it changed anything."""

    def sql(statement: str) -> str:
        return statement.replace("?", placeholder)

    changed: bool
    if action in ("freeze", "unfreeze"):
        topic = bytes.fromhex(target)
        held = 1 if action == "freeze" else 0
        changed = bool(
            run(
                sql("UPDATE topics SET held = ? WHERE topic = ? AND held != ? RETURNING 1"),
                (held, topic, held),
            )
        )
    elif action == "drop":
        topic = bytes.fromhex(target)
        for table in ("snapshots", "envelopes", "topics"):
            run(sql(f"DELETE FROM {table} WHERE topic = ?"), (topic,))  # noqa: S608 - ours
        changed = _listed(run, sql, "drop", target, reason, now)
    elif action in ("ban", "allow", "invite"):
        changed = _listed(run, sql, action, target, reason, now)
    elif action in ("unban", "disallow", "uninvite"):
        kind = {"unban": "ban", "disallow": "allow", "uninvite": "invite"}[action]
        changed = bool(
            run(
                sql("DELETE FROM moderation WHERE kind = ? AND value = ? RETURNING 1"),
                (kind, target),
            )
        )
    else:
        raise ModerationError(f"Unknown moderation action {action!r}.")
    if changed:
        run(
            sql("INSERT INTO moderation_log(at, action, target, reason) VALUES (?, ?, ?, ?)"),
            (now, action, target, reason),
        )
    return changed


def _listed(
    run: Callable[[str, tuple[Any, ...]], Rows],
    sql: Callable[[str], str],
    kind: str,
    value: str,
    reason: str,
    now: float,
) -> bool:
    """Add an entry to a moderation list; whether it was new."""
    return bool(
        run(
            sql(
                "INSERT INTO moderation(kind, value, reason, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, value) DO NOTHING RETURNING 1"
            ),
            (kind, value, reason, now),
        )
    )
