"""The node's local store: one SQLite file."""

from hearth.store.sqlite import ChangeRow, GroupRow, Store

__all__ = ["ChangeRow", "GroupRow", "Store"]
