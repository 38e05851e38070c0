"""The relay's settings: every limit of SECURITY.md §7, with safe defaults, from TOML."""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hearth.errors import ConfigError
from hearth.protocol.mailbox import MailboxLimits
from relay.forwarded import parse_networks

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ADMISSIONS", "RelayConfig", "as_toml", "load_config", "peer_address"]

ADMISSIONS = ("open", "allow-list")
"""Who may register a new topic: anyone, or only the keys in ``allowed_keys``."""

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """Everything a relay operator can set. Units are in the names."""

    host: str = "127.0.0.1"
    port: int = 8765
    data: str = "relay-data"
    # Empty: the store is SQLite in the data directory. A PostgreSQL address
    # (postgresql://USER@HOST/DB; the password from PGPASSWORD or ~/.pgpass) lets several
    # relay processes behind one address share one store.
    database_url: str = ""
    max_frame_bytes: int = MiB + 4096
    heartbeat_s: float = 30.0
    handshake_timeout_s: float = 10.0
    max_connections: int = 2000
    max_connections_per_ip: int = 20
    outbound_buffer_bytes: int = 8 * MiB
    # A catch-up reads stored bundles a page at a time, at most this many bytes of them;
    # the page counts against the outbound buffer until it is sent.
    catch_up_page_bytes: int = 2 * MiB
    # A connection whose sending has not moved for this long (it does not read) is cut off.
    send_stall_s: float = 60.0
    max_topics_per_connection: int = 64
    publish_per_s: float = 20.0
    publish_burst: int = 500
    bad_signatures_per_minute: int = 3
    topic_quota_bytes: int = 256 * MiB
    topic_quota_bundles: int = 200_000
    # Relay-wide: the per-topic quota bounds nothing if anyone can register topics without
    # end. Past either limit new topics and bundles are refused with "relay-full".
    max_topics: int = 10_000
    max_stored_bytes: int = 10 * 1024 * MiB
    # New topics a connection may register in its life, and an address at once (then one
    # more every registration_back_per_ip_s); a node registers its group's one or two.
    registrations_per_connection: int = 16
    registrations_per_ip: int = 20
    registration_back_per_ip_s: float = 180.0
    # A topic no node has registered (each does, every time it connects) for this long is
    # deleted with all it holds.
    topic_expiry_s: float = 180 * 24 * 3600.0
    disk_high_water: float = 0.90
    shutdown_grace_s: float = 8.0
    # Behind a reverse proxy every client comes from the proxy's address. Sockets from
    # these addresses or ranges (the proxies you run) are taken to be proxies: the client
    # is the address they appended to X-Forwarded-For (relay/forwarded.py). By default
    # this machine's own: only a program on it can connect from there (a proxy beside it).
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # Bundles a snapshot covers are deleted this long after the snapshot arrived: nodes
    # that were away longer get the snapshot and what followed it instead.
    snapshot_retention_s: float = 30 * 24 * 3600.0
    prune_every_s: float = 3600.0
    # Invite mailboxes: two sides, a handful of small messages, gone within the hour.
    max_mailboxes: int = 1000
    mailboxes_per_ip: int = 5
    mailbox_message_bytes: int = 4096
    mailbox_messages: int = 16
    mailbox_ttl_s: float = 3600.0
    # Opening an invite one did not create is a guess at its number (1-999): this many
    # at once from one address, then one more every invite_guess_back_per_ip_s; and over
    # the whole relay, invite_guesses at once, then one every invite_guess_back_s.
    invite_guesses_per_ip: int = 5
    invite_guess_back_per_ip_s: float = 60.0
    invite_guesses: int = 20
    invite_guess_back_s: float = 60.0
    # Peer relays (DESIGN §6): the ones this relay dials, each as its address and the relay
    # id its operator gave (``wss://relay.example.org#<id>``: the link is refused unless the
    # relay there proves that id), and the relay ids (as printed by `hearth-relay id`)
    # allowed to dial in. A link mirrors every topic both ways.
    peers: tuple[str, ...] = ()
    accept_peers: tuple[str, ...] = ()
    peer_publish_per_s: float = 2000.0
    peer_publish_burst: int = 20_000
    # After a removal the group's old topic is frozen: bundles for it are refused this long
    # after a member asked (members offline during the removal upload theirs meanwhile).
    freeze_grace_s: float = 30 * 24 * 3600.0
    # Who may register new topics here: "open" (anyone), or "allow-list": only the relay
    # keys listed in allowed_keys, or added with `hearth-relay allow KEY`.
    admission: str = "open"
    allowed_keys: tuple[str, ...] = ()
    # Topics one admission invite may admit: a group's, and its new one after each member
    # removal (old ones expire); whoever holds the code must not register groups without end.
    topics_per_invite: int = 16

    def mailbox_limits(self) -> MailboxLimits:
        """The invite mailboxes' limits."""
        return MailboxLimits(
            max_mailboxes=self.max_mailboxes,
            per_creator=self.mailboxes_per_ip,
            message_bytes=self.mailbox_message_bytes,
            messages=self.mailbox_messages,
            ttl_s=self.mailbox_ttl_s,
            guesses_per_address=self.invite_guesses_per_ip,
            guess_back_per_address_s=self.invite_guess_back_per_ip_s,
            guesses=self.invite_guesses,
            guess_back_s=self.invite_guess_back_s,
        )

    def limits(self) -> dict[str, int]:
        """The limits clients are told about (and `/info` shows)."""
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "heartbeat_s": int(self.heartbeat_s),
            "max_topics_per_connection": self.max_topics_per_connection,
            "publish_per_s": int(self.publish_per_s),
            "publish_burst": self.publish_burst,
            "topic_quota_bytes": self.topic_quota_bytes,
            "topic_quota_bundles": self.topic_quota_bundles,
            "snapshot_retention_s": int(self.snapshot_retention_s),
            "peer_publish_per_s": int(self.peer_publish_per_s),
            "peer_publish_burst": self.peer_publish_burst,
            "max_connections": self.max_connections,
            "max_connections_per_ip": self.max_connections_per_ip,
            "handshake_timeout_s": int(self.handshake_timeout_s),
            "outbound_buffer_bytes": self.outbound_buffer_bytes,
            "catch_up_page_bytes": self.catch_up_page_bytes,
            "send_stall_s": int(self.send_stall_s),
            "invite_guesses_per_ip": self.invite_guesses_per_ip,
            "invite_guess_back_per_ip_s": int(self.invite_guess_back_per_ip_s),
            "invite_guesses": self.invite_guesses,
            "invite_guess_back_s": int(self.invite_guess_back_s),
            "max_topics": self.max_topics,
            "max_stored_bytes": self.max_stored_bytes,
            "registrations_per_connection": self.registrations_per_connection,
            "registrations_per_ip": self.registrations_per_ip,
            "registration_back_per_ip_s": int(self.registration_back_per_ip_s),
            "topic_expiry_s": int(self.topic_expiry_s),
        }


# Numbers that may be 0: the port (0 picks a free one), and what 0 makes strict or
# immediate, not broken (no bad signature allowed; a freeze or the deletion of superseded
# snapshots at once).
_ZERO_ALLOWED = {"port", "bad_signatures_per_minute", "freeze_grace_s", "snapshot_retention_s"}


_DEFAULTS = {f.name: f.default for f in fields(RelayConfig)}

# Times a client must answer within, over the Internet: a heartbeat's pong (within half
# of heartbeat_s, which clients are told in whole seconds), a handshake, a send moving.
_AT_LEAST_A_SECOND = ("heartbeat_s", "handshake_timeout_s", "send_stall_s")


def _password_in(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.password) or "password" in parse_qs(parts.query)


def _check(config: RelayConfig) -> list[str]:
    problems = []
    if any(c.isspace() or not c.isprintable() for c in config.host):
        problems.append(f"host {config.host!r} is not an address or a name to listen on")
    if not 0 <= config.port <= 65535:
        problems.append(f"port {config.port} is not between 0 and 65535")
    for field in fields(config):
        value = getattr(config, field.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not math.isfinite(value):
            problems.append(f"{field.name} is {value}, which is not a number a limit can be")
        elif value < 0:
            problems.append(f"{field.name} is negative")
        elif value == 0 and field.name not in _ZERO_ALLOWED:
            problems.append(
                f"{field.name} is 0, which cannot work (the default is {_DEFAULTS[field.name]})"
            )
    for name in _AT_LEAST_A_SECOND:
        value = getattr(config, name)
        if 0 < value < 1:
            problems.append(
                f"{name} is {value}: under a second no client beyond this machine can meet "
                f"it (the default is {_DEFAULTS[name]})"
            )
    if _password_in(config.database_url):
        problems.append(
            "database_url holds a password: anyone who can read the file (or `check-config "
            "--print`) would see it; give it in PGPASSWORD or ~/.pgpass instead"
        )
    if config.admission not in ADMISSIONS:
        problems.append(
            f"admission must be one of {', '.join(ADMISSIONS)}, not {config.admission!r}"
        )
    for key in config.allowed_keys:
        if not _is_relay_id(key):  # a relay key: 32 bytes as hex, like an id
            problems.append(f"allowed_keys entry {key!r} is not a key (64 hex digits)")
    if not 0 < config.disk_high_water <= 1:
        problems.append("disk_high_water must be a fraction between 0 and 1")
    if config.max_frame_bytes < 64 * 1024:
        problems.append("max_frame_bytes below 64 KiB would refuse ordinary bundles")
    if 0 < config.outbound_buffer_bytes < config.max_frame_bytes:
        problems.append(
            f"outbound_buffer_bytes ({config.outbound_buffer_bytes}) is less than one bundle "
            f"may be (max_frame_bytes, {config.max_frame_bytes}): a member reading promptly "
            "would be cut off as a slow reader by any big bundle"
        )
    if config.database_url and not config.database_url.startswith(("postgresql://", "postgres://")):
        problems.append("database_url is not a postgresql:// address")
    for entry in config.peers:
        url, _, relay_id = entry.partition("#")
        if not url.startswith(("ws://", "wss://")):
            problems.append(f"peer {entry!r} is not a ws:// or wss:// address")
        elif not _is_relay_id(relay_id):
            problems.append(
                f"peer {entry!r} names no relay id: write it as {url}#ID, with the id its "
                "operator gets from `hearth-relay id` (the link is refused unless that relay "
                "proves it)"
            )
    proxies, not_addresses = parse_networks(config.trusted_proxies)
    for network in proxies:
        if network.prefixlen < _WIDEST_PROXY_RANGE[network.version]:
            problems.append(
                f"trusted_proxies entry {str(network)!r} is far wider than any proxy's "
                "addresses: every client from it could write its own address into "
                "X-Forwarded-For, past every per-address limit and ban; list only your proxies"
            )
    for bad in not_addresses:
        problems.append(
            f"trusted_proxies entry {bad!r} is not an address or range (such as 127.0.0.1 "
            "or 172.16.0.0/12)"
        )
    for relay_id in config.accept_peers:
        if not _is_relay_id(relay_id):
            problems.append(
                f"accept_peers entry {relay_id!r} is not a relay id "
                "(64 hex digits, as `hearth-relay id` prints)"
            )
    return problems


# The widest range a proxy's addresses may be given as, in prefix bits: private IPv4
# (10.0.0.0/8), and IPv6's unique local addresses (fc00::/7).
_WIDEST_PROXY_RANGE = {4: 8, 6: 7}


def _is_relay_id(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) == 32
    except ValueError:
        return False


def peer_address(entry: str) -> tuple[str, bytes]:
    """A ``peers`` entry (checked by :func:`load_config`) as the address to dial and the
    relay id that must answer there."""
    url, _, relay_id = entry.partition("#")
    return url, bytes.fromhex(relay_id)


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text in quotes"}


def _unknown(name: str, known: Iterable[str]) -> str:
    """An unknown setting named, with the known one it is most likely a slip for."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"unknown setting {name}" + (f" (did you mean {close[0]}?)" if close else "")


def _relay_table(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The settings of a file: its ``[relay]`` table, or its top-level keys if it has no
    tables. Anything else would be ignored silently, so it is refused: a key above
    ``[relay]`` (TOML puts it outside the table) or another section."""
    if "relay" not in raw:
        tables = sorted(k for k, v in raw.items() if isinstance(v, dict))
        if tables:
            raise ConfigError(
                f"{path}: unknown section [{tables[0]}]; the settings belong in [relay]."
            )
        return raw
    table = raw["relay"]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: relay should be the [relay] section.")
    stray = sorted(k for k in raw if k != "relay")
    if stray:
        named = ", ".join(f"[{k}]" if isinstance(raw[k], dict) else k for k in stray)
        raise ConfigError(
            f"{path}: {named} outside [relay] would be ignored; every setting belongs under "
            "[relay] (a key above the [relay] line is outside it)."
        )
    return dict(table)


def as_toml(config: RelayConfig) -> str:
    """The settings in effect, as a ``[relay]`` table (what ``check-config --print`` shows)."""
    lines = ["[relay]"]
    for field in fields(config):
        lines.append(f"{field.name} = {_toml_value(getattr(config, field.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    """A TOML basic string: the quote, the backslash and control characters (DEL too)
    escaped, everything else as it is (JSON's escapes of characters beyond U+FFFF are
    surrogate pairs, which TOML refuses)."""
    out = []
    for c in text:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def load_config(
    path: Path | None,
    *,
    add_peers: Sequence[str] = (),
    add_accept_peers: Sequence[str] = (),
    **overrides: Any,
) -> RelayConfig:
    """Settings from a TOML file (a ``[relay]`` table or top-level keys), then overrides,
    with peers from the command line added to the file's."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"The config file {path} cannot be read ({exc}).") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"The config file {path} is not UTF-8 text (byte {exc.start}); save it as "
                "UTF-8, as TOML requires."
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"The config file {path} is not valid TOML ({exc}).") from exc
        table = _relay_table(raw, path)
        known = {f.name: f for f in fields(RelayConfig)}
        if "trust_forwarded_for" in table:
            raise ConfigError(
                f"{path}: trust_forwarded_for is gone: it believed whatever a client wrote "
                'into X-Forwarded-For. List your proxies instead: trusted_proxies = ["127.0.0.1"] '
                "for a proxy on this machine (see deploy/relay.toml)."
            )
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(
                f"{path}: " + "; ".join(_unknown(name, known) for name in unknown) + "."
            )
        for name, value in table.items():
            default = getattr(RelayConfig(), name)
            if isinstance(default, tuple):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{path}: {name} should be a list of strings.")
                values[name] = tuple(value)
                continue
            int_for_float = isinstance(default, float) and isinstance(value, int)
            if isinstance(value, bool) != isinstance(default, bool) or (
                not isinstance(value, type(default)) and not int_for_float
            ):
                kind = _KINDS.get(type(default), type(default).__name__)
                raise ConfigError(f"{path}: {name} should be {kind}, not {value!r}.")
            values[name] = value
    config = replace(RelayConfig(**values), **{k: v for k, v in overrides.items() if v is not None})
    config = replace(
        config,
        peers=config.peers + tuple(add_peers),
        accept_peers=config.accept_peers + tuple(add_accept_peers),
    )
    problems = _check(config)
    if problems:
        raise ConfigError("The relay settings are not usable: " + "; ".join(problems) + ".")
    # Keys are compared as the relay writes them (lower case, no spaces): hex is hex
    # however the operator pasted it.
    return replace(
        config,
        allowed_keys=tuple(bytes.fromhex(k).hex() for k in config.allowed_keys),
        accept_peers=tuple(bytes.fromhex(k).hex() for k in config.accept_peers),
    )
