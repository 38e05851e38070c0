"""Bundle files (`hearth bundle export` / `import`), read as a stream.

A file is one encoded value (:mod:`hearth.protocol.codec`): ``["hearth-bundles", 1,
[envelope, …]]``. :func:`entries` reads it from a binary stream one envelope at a time,
so that importing a file of any size takes no more memory than its largest bundle, and
an entry larger than any bundle can be is skipped without being read into memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from hearth.errors import ProtocolError
from hearth.protocol import codec
from hearth.protocol.bundle import MAX_BUNDLE

__all__ = ["MAGIC", "entries", "header"]

MAGIC = "hearth-bundles"
_LIST, _BYTES = 6, 4
_MAX_ENTRY = MAX_BUNDLE + 256  # what parse_envelope accepts at most
_CHUNK = 64 * 1024


def header() -> bytes:
    """What a file of bundles starts with, up to the number of bundles."""
    return codec.encode([MAGIC, 1, []])[:-1]


def _byte(stream: BinaryIO) -> int:
    data = stream.read(1)
    if not data:
        raise ProtocolError("The file ends in the middle of an entry.")
    return data[0]


def _uvarint(stream: BinaryIO) -> int:
    result = shift = 0
    while True:
        byte = _byte(stream)
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ProtocolError("A length in the file is too long.")


def entries(stream: BinaryIO) -> Iterator[bytes | None]:
    """Each envelope in a bundle file, in order; ``None`` for an entry too large to be a
    bundle (skipped unread). Raises :class:`ProtocolError` if the file is not a bundle
    file, or once it turns out damaged (what came before it has been yielded)."""
    start = header()
    if stream.read(len(start)) != start:
        raise ProtocolError("not a Hearth bundle file")
    count = _uvarint(stream)
    for _ in range(count):
        if _byte(stream) != _BYTES:
            raise ProtocolError("an entry of the file is not a bundle")
        size = _uvarint(stream)
        if size > _MAX_ENTRY:
            while size:
                skipped = len(stream.read(min(size, _CHUNK)))
                if not skipped:
                    raise ProtocolError("The file ends in the middle of an entry.")
                size -= skipped
            yield None
            continue
        data = stream.read(size)
        if len(data) != size:
            raise ProtocolError("The file ends in the middle of an entry.")
        yield data
    if stream.read(1):
        raise ProtocolError("The file has bytes left over after its end.")
