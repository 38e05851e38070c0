"""The relay's logs: one JSON object per line, for operators' log tools, and bounded
whatever clients do (SECURITY.md §7).

Every record carries its time, level, logger and event; rejections add a ``reason`` and
the client as a tag (:class:`ClientTags`: keyed by a secret that changes every day, so a
tag cannot be turned back into the address, nor followed from one day to the next). No
raw address reaches the log, not even in aiohttp's or asyncio's own lines (:func:`redact`
runs over every line). Text a client sends is cut short (:func:`shown`), and repeated
lines about one client are summarised (:class:`LogLimit`): a flood of bad frames costs a
few lines a minute, not a line each.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ClientTags", "JsonFormatter", "LogLimit", "configure", "redact", "shown"]

_FIELDS = ("reason", "client", "topic_count", "bundles", "code", "peer", "seconds", "times")

_DAY_S = 86_400


class ClientTags:
    """Client addresses as logs show them: an HMAC of the address under a random secret
    drawn afresh each day (by the wall clock), never the address or a plain hash of it
    (the addresses are few enough to hash them all)."""

    def __init__(
        self, random_bytes: Callable[[int], bytes], wall_clock: Callable[[], float]
    ) -> None:
        self._random_bytes = random_bytes
        self._wall_clock = wall_clock
        self._day = -1
        self._secret = b""

    def __call__(self, address: str) -> str:
        day = int(self._wall_clock() // _DAY_S)
        if day != self._day:
            self._day, self._secret = day, self._random_bytes(32)
        return hmac.new(self._secret, address.encode(), hashlib.sha256).hexdigest()[:12]


def shown(text: str, limit: int = 160) -> str:
    """Text a client chose, as a log may show it: printable, and at most ``limit``
    characters (with how many more there were)."""
    cut = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return cut if len(text) <= limit else f"{cut}... ({len(text) - limit} more characters)"


_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(
    r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:\d{1,3}(?:\.\d{1,3}){3})?(?![0-9A-Fa-f:]|\.\d)"
)


def _address(match: re.Match[str]) -> str:
    try:
        ipaddress.ip_address(match.group(0))
    except ValueError:
        return match.group(0)  # a time of day, a version number...
    return "[address]"


def redact(text: str) -> str:
    """``text`` with every IP address in it (v4 or v6) replaced by ``[address]``."""
    return _IPV4.sub(_address, _IPV6.sub(_address, text))


@dataclass
class LogLimit:
    """How many lines a minute may say the same thing about one client (``per_key``),
    and how many such lines in all (``lines``); past either, the lines are counted
    instead and :meth:`roll` hands back one summary per kind at the end of the minute."""

    clock: Callable[[], float]
    per_key: int = 5
    lines: int = 200
    window_s: float = 60.0
    _started: float = 0.0
    _said: Counter[tuple[str, str]] = field(default_factory=Counter)
    _total: int = 0
    _held_back: Counter[tuple[str, str]] = field(default_factory=Counter)

    def allow(self, what: str, client: str) -> bool:
        """Whether to log this line now; if not, it is counted for the summary."""
        self._roll_if_due()
        key = (what, client)
        if self._total < self.lines and self._said[key] < self.per_key:
            self._said[key] += 1
            self._total += 1
            return True
        # Past the relay-wide budget, clients are not told apart: the summary stays small.
        self._held_back[key if self._total < self.lines else (what, "")] += 1
        return False

    def roll(self) -> list[tuple[str, str, int]]:
        """At the end of a window: (what, client or '' for many, how many were held back)."""
        if self.clock() - self._started < self.window_s:
            return []
        held = sorted((what, client, n) for (what, client), n in self._held_back.items())
        self._started = self.clock()
        self._said.clear()
        self._held_back.clear()
        self._total = 0
        return held

    def _roll_if_due(self) -> None:
        """A new window without waiting for :meth:`roll` (what was held back stays held
        for its summary)."""
        if self.clock() - self._started >= self.window_s:
            self._started = self.clock()
            self._said.clear()
            self._total = 0


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON, with no IP address in it."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        for name in _FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, sort_keys=True)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(*, json_lines: bool, verbose: bool) -> None:
    """Send the relay's logs to stderr: JSON lines (the default) or plain text."""
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
