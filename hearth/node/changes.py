"""What changed in a node, said to whoever watches it (the app), as it happens.

The node's own writers call :meth:`ChangeNotifier.notify` after a change that a watcher
would show: a bundle applied, a local edit, a sync attempt logged, a neighbourhood record
kept. A watcher subscribes a callback and gets each event as a typed value, so it never
needs to query the store to find out whether something moved.

Commits by *another process* on the same home (a ``hearth`` command in a second terminal)
do not pass through this node's notifier: :meth:`hearth.store.sqlite.Store.data_version`
is the cheap counter a watcher reads for those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "BundlesApplied",
    "ChangeNotifier",
    "LocalChange",
    "NeighbourhoodRecordKept",
    "NodeEvent",
    "SyncAttempted",
]


@dataclass(frozen=True, slots=True)
class BundlesApplied:
    """Bundles from another device were applied to a group's ledger."""

    group_id: str


@dataclass(frozen=True, slots=True)
class LocalChange:
    """This node changed a group's ledger itself (an edit, a new epoch, a join)."""

    group_id: str


@dataclass(frozen=True, slots=True)
class SyncAttempted:
    """A sync with a relay or peer was tried and its outcome logged."""

    url: str
    ok: bool


@dataclass(frozen=True, slots=True)
class NeighbourhoodRecordKept:
    """A neighbourhood record (said here or received) was kept."""

    neighbourhood_id: str


NodeEvent: TypeAlias = BundlesApplied | LocalChange | SyncAttempted | NeighbourhoodRecordKept
Listener: TypeAlias = Callable[[NodeEvent], None]


class ChangeNotifier:
    """The node's list of watchers, and a count of the events said so far.

    ``count`` lets a watcher that has just drawn everything tell whether an event it is
    told of later came before that drawing (nothing new) or after it.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.count = 0

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; returns what unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def notify(self, event: NodeEvent) -> None:
        """Tell every watcher of ``event``."""
        self.count += 1
        for listener in list(self._listeners):
            listener(event)
