"""The relay's settings: every limit of SECURITY.md §7, with safe defaults, from TOML."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from hearth.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["RelayConfig", "load_config"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """Everything a relay operator can set. Units are in the names."""

    host: str = "127.0.0.1"
    port: int = 8765
    data: str = "relay-data"
    max_frame_bytes: int = MiB + 4096
    heartbeat_s: float = 30.0
    handshake_timeout_s: float = 10.0
    max_connections: int = 2000
    max_connections_per_ip: int = 20
    outbound_buffer_bytes: int = 8 * MiB
    max_topics_per_connection: int = 64
    publish_per_s: float = 20.0
    publish_burst: int = 500
    bad_signatures_per_minute: int = 3
    topic_quota_bytes: int = 256 * MiB
    topic_quota_bundles: int = 200_000
    disk_high_water: float = 0.90
    shutdown_grace_s: float = 8.0
    # Behind a reverse proxy every client comes from the proxy's address: trust the
    # address it puts first in X-Forwarded-For instead (only when a proxy is in front!).
    trust_forwarded_for: bool = False
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
        }


def _check(config: RelayConfig) -> list[str]:
    problems = []
    if not 0 <= config.port <= 65535:
        problems.append(f"port {config.port} is not between 0 and 65535")
    for field in fields(config):
        value = getattr(config, field.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            problems.append(f"{field.name} is negative")
    if not 0 < config.disk_high_water <= 1:
        problems.append("disk_high_water must be a fraction between 0 and 1")
    if config.max_frame_bytes < 64 * 1024:
        problems.append("max_frame_bytes below 64 KiB would refuse ordinary bundles")
    return problems


def load_config(path: Path | None, **overrides: Any) -> RelayConfig:
    """Settings from a TOML file (a ``[relay]`` table or top-level keys), then overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"The config file {path} cannot be read ({exc}).") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"The config file {path} is not valid TOML ({exc}).") from exc
        table = raw.get("relay", raw)
        known = {f.name: f for f in fields(RelayConfig)}
        unknown = sorted(set(table) - set(known) - {"peers"})
        if unknown:
            raise ConfigError(f"{path}: unknown settings {', '.join(unknown)}.")
        for name, value in table.items():
            if name == "peers":
                continue
            default = getattr(RelayConfig(), name)
            int_for_float = isinstance(default, float) and isinstance(value, int)
            if isinstance(value, bool) != isinstance(default, bool) or (
                not isinstance(value, type(default)) and not int_for_float
            ):
                raise ConfigError(
                    f"{path}: {name} should be a {type(default).__name__}, not {value!r}."
                )
            values[name] = value
    config = replace(RelayConfig(**values), **{k: v for k, v in overrides.items() if v is not None})
    problems = _check(config)
    if problems:
        raise ConfigError("The relay settings are not usable: " + "; ".join(problems) + ".")
    return config
