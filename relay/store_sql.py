"""What the two relay stores share of their SQL: the work of ``UpkeepStore.prune`` and
``UpkeepStore.expire`` (relay/storage.py) inside the write transaction each store holds,
and reading a page by bytes. Both :mod:`relay.sqlite_store` and :mod:`relay.postgres_store` import
this; it imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "NO_END",
    "USE_DATED_TO_S",
    "Rows",
    "expire_unused",
    "fitting",
    "prune_superseded",
]

NO_END = (1 << 63) - 1
"""A cursor past every cursor."""

Rows = list[tuple[Any, ...]]


def prune_superseded(
    run: Callable[[str, tuple[Any, ...]], Rows],
    placeholder: str,
    older_than: float,
) -> int:
    """:meth:`~relay.storage.UpkeepStore.prune`'s work, shared by both stores inside the
    write transaction each holds: ``run`` executes one statement (written with ``?``,
    which becomes the driver's ``placeholder``) and returns its rows.

    Only snapshots go, never the bundles they cover: a node takes a snapshot only
    together with the signed bundles it covers, checked against them (R13), so a relay
    that deleted those would leave every new device with a snapshot it cannot check.
    """

    def sql(statement: str) -> str:
        return statement.replace("?", placeholder)

    removed = 0
    chosen = run(
        sql("SELECT topic, MAX(covers) FROM snapshots WHERE noted_at <= ? GROUP BY topic"),
        (older_than,),
    )
    for topic, covers in chosen:
        doomed = sql(
            "FROM envelopes WHERE topic = ? AND cursor IN "
            "(SELECT cursor FROM snapshots WHERE topic = ? AND covers < ?)"
        )
        args = (topic, topic, covers)
        count, size = run(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) {doomed}", args)[0]
        if not count:
            continue
        run(f"DELETE {doomed}", args)
        run(sql("DELETE FROM snapshots WHERE topic = ? AND covers < ?"), (topic, covers))
        run(
            sql("UPDATE topics SET bytes = bytes - ?, bundles = bundles - ? WHERE topic = ?"),
            (size, count, topic),
        )
        removed += int(count)
    return removed


USE_DATED_TO_S = 86_400.0
"""A topic's use is written down at most once a day (a write per registration would be
a write for every topic each time a node connects)."""


def expire_unused(
    run: Callable[[str, tuple[Any, ...]], Rows], placeholder: str, unused_since: float
) -> int:
    """:meth:`~relay.storage.UpkeepStore.expire`'s work, shared by both stores inside the
    write transaction each holds (as :func:`prune_superseded`)."""

    def sql(statement: str) -> str:
        return statement.replace("?", placeholder)

    doomed = run(sql("SELECT topic FROM topics WHERE used_at > 0 AND used_at < ?"), (unused_since,))
    for (topic,) in doomed:
        for table in ("snapshots", "envelopes", "topics"):
            run(sql(f"DELETE FROM {table} WHERE topic = ?"), (topic,))  # noqa: S608 - ours
    return len(doomed)


def fitting(sizes: Sequence[tuple[Any, Any]], max_bytes: int) -> int:
    """Of envelopes' (cursor, size) in cursor order, the cursor of the last that fits
    into ``max_bytes`` with those before it: a page read by bytes, not by count (a page
    of 200 bundles of 1 MiB each would hold 200 MiB per reader). Always the first, so a
    page is never empty while envelopes remain."""
    total, through = 0, int(sizes[0][0])
    for cursor, size in sizes:
        total += int(size)
        if total > max_bytes and cursor != sizes[0][0]:
            break
        through = int(cursor)
    return through
