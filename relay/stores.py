"""Which store a relay's settings name, opened: the one place that knows both kinds.

Kept out of the port (:mod:`relay.storage`) so that the port imports neither store and
each store imports only the port: no import runs in a circle between them.
"""

from __future__ import annotations

from pathlib import Path

from hearth.errors import ConfigError
from relay.config import RelayConfig
from relay.storage import Store

__all__ = ["open_store"]


def open_store(config: RelayConfig) -> Store:
    """The store a relay's settings name: PostgreSQL at ``database_url`` if set, otherwise
    SQLite in the data directory."""
    if not config.database_url:
        from relay.sqlite_store import STORE_FILE, SqliteStore

        return SqliteStore(Path(config.data) / STORE_FILE)
    try:
        from relay.postgres_store import PostgresStore
    except ImportError as exc:  # psycopg is an optional extra
        raise ConfigError(
            "database_url names PostgreSQL, which needs the relay's PostgreSQL driver: "
            "pip install 'hearth[postgres]'."
        ) from exc
    return PostgresStore(config.database_url)
