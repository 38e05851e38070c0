"""What the store's named methods are written over: one read, one write, one write of many rows.

The node's store is one class (``Store`` in ``sqlite.py``) assembled from parts, one per
kind of thing it keeps (``feed_rows``, ``peer_rows``). Each part writes its SQL over the three
statements declared here; ``Store`` carries them out on its SQLite connection. Nothing
outside ``hearth/store/`` writes SQL (``tests/test_node_store_port.py`` checks the modules
already moved).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

__all__ = ["Statements"]


class Statements(ABC):
    """The three statements a part of the store is written over."""

    @abstractmethod
    def query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        """Rows of a read."""

    @abstractmethod
    def run(self, sql: str, args: Sequence[object] = ()) -> None:
        """One statement (inside a write)."""

    @abstractmethod
    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """One statement for many rows (inside a write)."""
