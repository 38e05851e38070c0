"""``hearth-relay backup`` and ``restore``, whichever store the relay uses.

A backup is always one SQLite file in the relay's own schema, taken while the relay keeps
running: SQLite's online backup of an SQLite store, or one consistent read of a
PostgreSQL store. So a backup restores onto either kind of store, which is also how a
relay moves from SQLite to PostgreSQL when it outgrows one process (or back).
"""

from __future__ import annotations

from pathlib import Path

from relay.config import RelayConfig
from relay.sqlite_store import backup_store, restore_store

__all__ = ["backup", "restore"]


def backup(config: RelayConfig, dest: Path) -> Path:
    """Back up the store ``config`` names to ``dest`` (a file, or a directory for it)."""
    if not config.database_url:
        return backup_store(Path(config.data), dest)
    from relay.postgres_store import backup_to_file

    return backup_to_file(config.database_url, dest)


def restore(backup_file: Path, config: RelayConfig) -> str:
    """Restore a backup as the (empty) store ``config`` names; where it went."""
    if not config.database_url:
        return str(restore_store(backup_file, Path(config.data)))
    from relay.postgres_store import restore_from_file

    restore_from_file(backup_file, config.database_url)
    return "the PostgreSQL database"
