"""``hearth-relay backup`` and ``restore``, whichever store the relay uses.

A backup is always one SQLite file in the relay's own schema, taken while the relay keeps
running: SQLite's online backup of an SQLite store, or one consistent read of a
PostgreSQL store. So a backup restores onto either kind of store, which is also how a
relay moves from SQLite to PostgreSQL when it outgrows one process (or back).

A backup also carries the relay's identity key (``relay.key``: what peer relays know the
relay by), so the file is readable by its owner only. A restore puts the key back; one
that would give the relay a different id than it has asks first (peer relays accept the
old id only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hearth.crypto import SigningKey
from hearth.errors import ConfigError
from relay.config import RelayConfig
from relay.identity import KEY_FILE, REPLACED_KEY_FILE, existing, install
from relay.sqlite_store import backup_identity, backup_store, check_backup, restore_store

__all__ = ["BackedUp", "Restored", "backup", "restore"]


@dataclass(frozen=True, slots=True)
class BackedUp:
    """Where a backup went, and the id of the relay whose key it carries ('' if none)."""

    path: Path
    relay_id: str


@dataclass(frozen=True, slots=True)
class Restored:
    """Where a restore went and the id the relay has now ('' if it will make one)."""

    where: str
    relay_id: str
    replaced_id: str  # the id the relay had before, if the restore changed it
    key_file: str = ""  # where the relay's key is (absolute), if it has one


def backup(config: RelayConfig, dest: Path) -> BackedUp:
    """Back up the store ``config`` names, with the relay's identity key, to ``dest`` (a
    file, or a directory for it)."""
    key = existing(Path(config.data))
    secret = key.secret if key is not None else None
    relay_id = key.public.hex() if key is not None else ""
    if not config.database_url:
        return BackedUp(backup_store(Path(config.data), dest, secret), relay_id)
    from relay.postgres_store import backup_to_file

    return BackedUp(backup_to_file(config.database_url, dest, secret), relay_id)


def restore(
    backup_file: Path, config: RelayConfig, *, change_id: Callable[[str, str], bool]
) -> Restored:
    """Restore a backup as the (empty) store ``config`` names, and its identity key into
    the data directory. If the data directory holds another key already, ``change_id``
    (old id, new id) decides whether the relay takes the backup's; if not, nothing is
    written."""
    check_backup(backup_file)
    data = Path(config.data)
    secret = backup_identity(backup_file)
    current = existing(data)
    restored_id = ""
    if secret is not None:
        if len(secret) != 32:
            raise ConfigError(f"{backup_file} holds a damaged relay key; nothing was restored.")
        restored_id = SigningKey(secret).public.hex()
    replaced = ""
    if secret is not None and current is not None and current.public.hex() != restored_id:
        if not change_id(current.public.hex(), restored_id):
            raise ConfigError(
                f"{data / KEY_FILE} holds another identity ({current.public.hex()}) than "
                f"the backup ({restored_id}); restoring would change this relay's id, and "
                "peer relays accept the old id only. Nothing was restored. Run again with "
                f"--force to take the backup's id (the key there now is kept as "
                f"{REPLACED_KEY_FILE}), or restore into another data directory."
            )
        replaced = current.public.hex()
    if not config.database_url:
        where = str(restore_store(backup_file, data))
    else:
        from relay.postgres_store import restore_from_file

        restore_from_file(backup_file, config.database_url)
        where = "the PostgreSQL database"
    if secret is not None:
        install(data, secret)
    elif current is not None:
        restored_id = current.public.hex()
    # Named in full: with PostgreSQL the store is in the database but the key here, and a
    # relay started on another data directory would make itself a new id.
    key_file = str((data / KEY_FILE).resolve()) if restored_id else ""
    return Restored(where, restored_id, replaced, key_file)
