"""The typed messages by which the app hears that what it shows may have changed.

:class:`tui.watch.NodeWatcher` posts them; the app redraws on them. Nothing in the app
queries the store to find out whether something moved.
"""

from __future__ import annotations

from textual.message import Message

__all__ = ["LedgerChanged", "SyncStateChanged"]


class LedgerChanged(Message):
    """Something in a group's ledger changed: bundles applied, an edit made here or by
    another process on this home, a neighbourhood record kept.

    ``group_id`` is ``None`` when the change came from another process and could be
    anywhere in the store. ``mark`` is the node's event count once it happened (``None``
    for another process's): a screen drawn at that count or later already shows it."""

    def __init__(self, group_id: str | None, mark: int | None) -> None:
        super().__init__()
        self.group_id = group_id
        self.mark = mark


class SyncStateChanged(Message):
    """A sync with a relay or peer was tried: "up to date" or "offline" may read
    differently now."""

    def __init__(self, url: str, ok: bool, mark: int) -> None:
        super().__init__()
        self.url = url
        self.ok = ok
        self.mark = mark
