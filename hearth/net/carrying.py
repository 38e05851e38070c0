"""Changes carried on a file — a USB stick between two devices that cannot reach each
other (``hearth bundle export / import / have``, and the app's "Carry changes on a file").

:func:`write_changes` writes the group's changes (all, or only those a ``have`` file from
the other device shows it lacks); :func:`read_changes` takes a file's changes in, a change
at a time; :func:`write_have` writes what this device has, for the other side's export.
"""

from __future__ import annotations

from pathlib import Path

from hearth.errors import ProtocolError, UsageError
from hearth.files import write_file
from hearth.node.node import Node
from hearth.protocol import bundle_file, codec
from hearth.validity.intake import Verdict, take_in, tallied
from hearth.values import counted

__all__ = ["read_changes", "read_have", "write_changes", "write_have"]

_HAVE_FILE = "hearth-have"


def write_changes(node: Node, group_id: str, file: str, *, since: str | None = None) -> int:
    """Write the group's changes to ``file`` (those the ``since`` file, written by
    :func:`write_have` on the other device, does not list); returns how many."""
    seen = read_have(Path(since).expanduser(), group_id) if since else {}
    chosen = [
        b.envelope
        for b in node.feeds.all(group_id)
        if b.state == "applied" and b.seq > seen.get(b.author.hex(), 0)
    ]
    write_file(file, codec.encode([bundle_file.MAGIC, 1, chosen]))
    return len(chosen)


def read_changes(node: Node, file: str) -> dict[Verdict, int]:
    """Take in the changes of a file, read one at a time (any size of file takes no more
    memory than its largest change); what is damaged or fails a rule is counted, and
    written once at the end. A file that is not one, or is cut short, is a
    :class:`UsageError` saying what was taken in."""
    counts = dict.fromkeys(Verdict, 0)
    source = f"file {file}"
    try:
        with Path(file).expanduser().open("rb") as stream, tallied(node):
            for envelope in bundle_file.entries(stream):
                if envelope is None:  # larger than any bundle: not read
                    counts[Verdict.REJECTED] += 1
                    continue
                counts[take_in(node, envelope, source=source).verdict] += 1
    except OSError as exc:
        raise UsageError(f"Cannot read {file} ({exc.strerror}).") from exc
    except ProtocolError as exc:
        taken = sum(counts.values())
        if not taken:
            raise UsageError(
                f"{file} is not a file of changes written by Hearth (`hearth bundle export`)."
            ) from None
        raise UsageError(
            f"{file} is damaged after its first {counted(taken, 'entry', 'entries')} ({exc}); "
            f"those were taken in ({counts[Verdict.APPLIED]} new). Write it again "
            "(`hearth bundle export`)."
        ) from None
    return counts


def write_have(node: Node, group_id: str, file: str) -> None:
    """Write what this device has of the group to ``file``, for the other device's
    :func:`write_changes` to leave out."""
    vector = node.feeds.version_vector(group_id)
    write_file(file, codec.encode([_HAVE_FILE, 1, group_id, vector]))


def read_have(path: Path, group_id: str) -> dict[str, int]:
    """What a ``have`` file says the other device has: each author's last change."""
    try:
        value = codec.decode(path.read_bytes())
    except (OSError, ProtocolError):
        raise UsageError(f"{path} is not a file written by `hearth bundle have`.") from None
    if not (
        isinstance(value, list)
        and len(value) == 4
        and value[0] == _HAVE_FILE
        and isinstance(value[3], dict)
    ):
        raise UsageError(f"{path} is not a file written by `hearth bundle have`.")
    if value[2] != group_id:
        raise UsageError(f"{path} is about another group.")
    return {str(k): int(v) for k, v in value[3].items() if isinstance(v, int)}
