"""Watching a node for the app: the node's own events, and commits by other processes.

What this process does to the node (the app's own sharing applying a bundle, a sync
logged, an edit) is told by the node's :class:`hearth.node.changes.ChangeNotifier` as it
happens, and turned here into typed Textual messages posted to the app.

A ``hearth`` command in another terminal on the same home commits through its own
connection, which the notifier cannot see. For those the watcher reads SQLite's
``PRAGMA data_version`` on a timer (:meth:`hearth.store.sqlite.Store.data_version`): a
counter kept in the database's shared memory that moves only when another connection
commits. Reading it touches no table, so it costs microseconds, not a query; the app
re-reads the ledger only when it moved. (SQLite offers no cross-process notification.)
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message_pump import MessagePump

from hearth.node.changes import (
    BundlesApplied,
    LocalChange,
    NeighbourhoodRecordKept,
    NodeEvent,
    SyncAttempted,
)
from hearth.node.node import Node
from tui.messages import LedgerChanged, SyncStateChanged

__all__ = ["NodeWatcher"]


class NodeWatcher:
    """Posts :class:`LedgerChanged` and :class:`SyncStateChanged` to ``target`` for what
    happens to ``node``: subscribe with :meth:`start`, unsubscribe with :meth:`stop`."""

    def __init__(self, node: Node, target: MessagePump) -> None:
        self.node = node
        self.target = target
        self._data_version = node.store.data_version()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Hear of the node's events from now on."""
        self._unsubscribe = self.node.changes.subscribe(self._heard)

    def stop(self) -> None:
        """Hear no more."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _heard(self, event: NodeEvent) -> None:
        mark = self.node.changes.count
        match event:
            case BundlesApplied(group_id) | LocalChange(group_id):
                self.target.post_message(LedgerChanged(group_id, mark))
            case NeighbourhoodRecordKept():
                self.target.post_message(LedgerChanged(None, mark))
            case SyncAttempted(url, ok):
                self.target.post_message(SyncStateChanged(url, ok, mark))

    def check_other_processes(self) -> None:
        """Post :class:`LedgerChanged` if another process committed since the last check
        (called by the app's timer)."""
        version = self.node.store.data_version()
        if version != self._data_version:
            self._data_version = version
            self.target.post_message(LedgerChanged(None, None))
