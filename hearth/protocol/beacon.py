"""LAN discovery beacons (SECURITY.md §5): a rotating tag per group, never a group id.

A node listening for peers announces, per group, ``HMAC(lan key, 10-minute bucket)``
(shortened). Another node of the same group computes the same tag and knows to dial; to
anyone else the tags are random and change every ten minutes. A tag only says "dial
here": the connection itself must still answer a fresh challenge with the epoch's relay
key (``hearth.protocol.serving``), so a replayed beacon gets nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

__all__ = ["BUCKET_MS", "TAG_BYTES", "beacon_tag", "groups_beaconed"]

BUCKET_MS = 10 * 60 * 1000
TAG_BYTES = 12  # 96 bits: no accidental matches, short enough for a TXT record


def beacon_tag(lan_key: bytes, now_ms: int) -> str:
    """The tag a group's nodes announce during the bucket holding ``now_ms``."""
    return _tag(lan_key, now_ms // BUCKET_MS)


def groups_beaconed(tags: Iterable[str], lan_keys: Mapping[str, bytes], now_ms: int) -> list[str]:
    """The groups (of ``lan_keys``: group id -> lan key) a set of announced tags belongs to.

    The neighbouring buckets count too, so two clocks a few minutes apart still meet.
    """
    seen = set(tags)
    bucket = now_ms // BUCKET_MS
    return sorted(
        group_id
        for group_id, key in lan_keys.items()
        if any(_tag(key, b) in seen for b in (bucket - 1, bucket, bucket + 1))
    )


def _tag(lan_key: bytes, bucket: int) -> str:
    mac = hmac.new(lan_key, b"hearth/v1/lan-beacon\x00" + bucket.to_bytes(8, "big"), hashlib.sha256)
    return mac.digest()[:TAG_BYTES].hex()
