"""A node's home directory, kept private (docs/security.md, R15).

The store in a home holds every epoch secret of the node's groups and the ledgers in
plain text; the ``keys/`` folder holds the device's secret keys. Other local users must
read none of it: the home and every folder in it are ``0700``, every file ``0600`` (the
store's WAL and shared-memory files take the store's own mode from SQLite). A home made
by an older Hearth, or loosened by hand or by a backup tool, is tightened when a node
opens it, and the member is told.

What a member exports on purpose (``hearth export -o``, ``hearth bundle export``) is
written where and as they ask: those files do not live in the home.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from hearth.errors import StorageError
from hearth.values import counted

__all__ = ["DIR_MODE", "FILE_MODE", "create_private_file", "make_private"]

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private(home: Path) -> list[Path]:
    """Create ``home`` if absent and make it and everything in it private; return the
    paths whose modes had to be tightened (the member is told, as a logged warning)."""
    try:
        home.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        tightened = [p for p in _walk(home) if _tighten(p)]
    except OSError as exc:
        raise StorageError(
            f"Cannot make the Hearth home {home} private ({exc.strerror}); check who owns it."
        ) from exc
    if tightened:
        log.warning(
            "%s could be read by other users of this computer (%s); it is now private to you.",
            home,
            counted(len(tightened), "file or folder", "files or folders"),
        )
    return tightened


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and private if it does not exist yet (before SQLite opens a
    new store there, so that the store and the files SQLite makes beside it are private
    from their first byte)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageError(f"Cannot create the store {path} ({exc.strerror}).") from exc
    os.close(fd)


def _walk(home: Path) -> list[Path]:
    found = [home]
    for root, dirs, files in os.walk(home):
        found += [Path(root, d) for d in dirs] + [Path(root, f) for f in files]
    return found


def _tighten(path: Path) -> bool:
    """Take group and other permissions off one path; whether any were there."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return False  # the mode of a link's target is not the home's to change
    wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077 and (mode & wanted) == wanted:
        return False
    os.chmod(path, (mode & ~0o077) | wanted)
    return bool(mode & 0o077)
