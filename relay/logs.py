"""The relay's logs: one JSON object per line, for operators' log tools.

Every record carries its time, level, logger and event; rejections add a ``reason`` and
the client as a salted hash (:func:`client_tag`), never the raw address. Nothing a client
sends is logged beyond frame types and reasons, so no keys and no plaintext reach the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

__all__ = ["JsonFormatter", "client_tag", "configure"]

_FIELDS = ("reason", "client", "topic_count", "bundles", "code", "peer", "seconds")


def client_tag(ip: str) -> str:
    """A client address as logs show it: hashed, never raw."""
    return hashlib.sha256(b"hearth-relay-log\0" + ip.encode()).hexdigest()[:12]


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name in _FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=True)


def configure(*, json_lines: bool, verbose: bool) -> None:
    """Send the relay's logs to stderr: JSON lines (the default) or plain text."""
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
