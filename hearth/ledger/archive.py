"""Keeping the live ledger small: what is finished and old moves to archive documents.

Every Automerge transaction costs time in proportion to the document's size, so a ledger
that kept every event for years would get slower every week. Entries that can no longer
change the present — events, closed needs and finished commitments older than
:data:`ARCHIVE_AFTER_MS` — are copied into one archive document per calendar quarter and
deleted from the live one. Queries read live and archive entries alike, so quantities,
custody and history stay exactly what they were.

Archive documents start from a genesis derived from the group and the quarter, so two
nodes archiving the same quarter at once write into one document, not two rivals, and
moving the same entry twice is harmless.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from typing import Protocol

from hearth.ledger.automerge_doc import EntryRef, LedgerDoc
from hearth.ledger.view import LedgerView

__all__ = ["ARCHIVE_AFTER_MS", "Archives", "archivable", "archive_seed", "period_of"]

ARCHIVE_AFTER_MS = 90 * 86_400_000
"""How old a finished entry must be before it moves to an archive."""


class Archives(Protocol):
    """A group's archive documents, loaded when first needed."""

    def get(self, period: str) -> LedgerDoc:
        """The archive document of a quarter, created if there is none yet."""
        ...

    def all(self) -> list[LedgerDoc]:
        """Every archive document of the group."""
        ...

    def named(self) -> dict[str, LedgerDoc]:
        """Every archive document of the group, by quarter."""
        ...

    def forget(self) -> None:
        """Drop what is loaded, to be read again from the store when next needed."""
        ...


def period_of(ms: int) -> str:
    """The calendar quarter of a moment, such as ``2026-Q3`` (UTC)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"


def archive_seed(group_seed: bytes, period: str) -> bytes:
    """What an archive document's genesis is derived from."""
    return group_seed + b"/archive/" + period.encode()


def archivable(view: LedgerView, now_ms: int) -> dict[str, list[EntryRef]]:
    """Entries old and finished enough to archive, grouped by quarter."""
    cutoff = now_ms - ARCHIVE_AFTER_MS
    found: defaultdict[str, list[EntryRef]] = defaultdict(list)
    for event in view.events_before(cutoff):
        found[period_of(event.at)].append(("events", event.id))
    for need in view.needs():
        if need.closed_at is not None and need.closed_at < cutoff:
            found[period_of(need.closed_at)].append(("needs", need.id))
    for commitment in view.commitments():
        if commitment.status.is_open or not commitment.changes:
            continue
        finished = max(change.at for change in commitment.changes)
        if finished < cutoff:
            found[period_of(finished)].append(("commitments", commitment.id))
    return dict(found)
