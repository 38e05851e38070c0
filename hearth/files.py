"""Writing what a member asked for to a file they named, with errors they can act on."""

from __future__ import annotations

import os
from pathlib import Path

from hearth.errors import UsageError

__all__ = ["write_file"]


def write_file(name: str, data: bytes | str) -> None:
    """Write ``data`` to the file ``name`` whole or not at all (written beside it, then
    renamed); a folder that is not there (an unplugged USB stick) or cannot be written
    to is a :class:`UsageError` saying so."""
    path = Path(name).expanduser()
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(
            f"There is no folder {str(folder)!r} to write {path.name} into (is the disk or "
            "USB stick plugged in and mounted?); nothing was written."
        )
    if path.is_dir():
        raise UsageError(f"{name} is a folder; give a file name inside it.")
    partial = folder / f".{path.name}.partial"
    raw = data.encode() if isinstance(data, str) else data
    try:
        partial.write_bytes(raw)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UsageError(f"Cannot write {name} ({exc.strerror}); nothing was written.") from None
