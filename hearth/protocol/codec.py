"""A small, strict binary encoding for everything Hearth puts on the wire.

Values are ``None``, ``bool``, ``int``, ``bytes``, ``str``, lists and string-keyed maps.
Encoding is deterministic (map keys sorted), so the same value always gives the same
bytes; decoding checks every length against what is left and against limits, and raises
:class:`~hearth.errors.ProtocolError` on anything malformed — never an ``IndexError`` or a
huge allocation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Union

from hearth.errors import ProtocolError

__all__ = ["Value", "bytes_head", "decode", "encode", "read_uvarint", "uvarint"]

Value = Union[None, bool, int, bytes, str, Sequence["Value"], Mapping[str, "Value"]]  # noqa: UP007

_NONE, _FALSE, _TRUE, _INT, _BYTES, _STR, _LIST, _MAP = range(8)
_MAX_DEPTH = 16
_MAX_ITEMS = 1_000_000
_MAX_INT_BITS = 64


def uvarint(value: int) -> bytes:
    """An unsigned LEB128 varint (also Automerge's length encoding)."""
    out = bytearray()
    _uvarint(value, out)
    return bytes(out)


def _uvarint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _encode(value: Value, out: bytearray) -> None:
    if value is None:
        out.append(_NONE)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise ProtocolError("An integer is too large for the wire format.")
        out.append(_INT)
        _uvarint((value << 1) ^ (value >> 64) if value < 0 else value << 1, out)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append(_BYTES)
        _uvarint(len(value), out)
        out += value
    elif isinstance(value, str):
        data = value.encode()
        out.append(_STR)
        _uvarint(len(data), out)
        out += data
    elif type(value) is dict or (  # a plain dict first: the abstract check costs more
        type(value) not in (list, tuple) and isinstance(value, Mapping)
    ):
        out.append(_MAP)
        _uvarint(len(value), out)
        for key in sorted(value):
            if not isinstance(key, str):
                raise ProtocolError("Map keys must be strings.")
            _encode(key, out)
            _encode(value[key], out)
    elif isinstance(value, (list, tuple)):
        out.append(_LIST)
        _uvarint(len(value), out)
        for item in value:
            _encode(item, out)
    else:
        raise ProtocolError(f"Cannot encode a {type(value).__name__}.")


@lru_cache(maxsize=1024)  # a few bytes each; lengths repeat (padded sizes, keys, ids)
def bytes_head(length: int) -> bytes:
    """What :func:`encode` writes before the contents of a bytes value of ``length``
    bytes (its tag and length). For hand-built encodings of hot, fixed-shape values (a
    bundle, a delivery), which must be exactly what :func:`encode` gives."""
    out = bytearray((_BYTES,))
    _uvarint(length, out)
    return bytes(out)


def read_uvarint(data: bytes, pos: int) -> tuple[int, int] | None:
    """The unsigned varint at ``pos`` and the position after it, if it is there and
    written as :func:`encode` writes it (shortest form); else ``None``."""
    result = shift = 0
    for index in range(pos, min(pos + 10, len(data))):
        byte = data[index]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result, index + 1) if byte or index == pos else None
        shift += 7
    return None


def encode(value: Value) -> bytes:
    """The bytes of a value."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _uvarint_at(data: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it (any length up to 70 bits)."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtocolError("The message is truncated.")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ProtocolError("A number in the message is too long.")


# One function with its state in locals, a one-byte number read inline: a bundle is
# decoded twice or more on the way in, thousands of them in a catch-up.
def _value(data: bytes, pos: int, depth: int) -> tuple[Value, int]:
    if depth > _MAX_DEPTH:
        raise ProtocolError("The message is nested too deeply.")
    end = len(data)
    if pos >= end:
        raise ProtocolError("The message is truncated.")
    tag = data[pos]
    pos += 1
    if tag <= _TRUE:
        return (None, False, True)[tag], pos
    if tag > _MAP:
        raise ProtocolError(f"Unknown value type {tag} in the message.")
    if pos < end and data[pos] < 0x80:
        number = data[pos]
        pos += 1
    else:
        number, pos = _uvarint_at(data, pos)
    if tag == _INT:
        value = (number >> 1) ^ -(number & 1)
        if value.bit_length() > _MAX_INT_BITS:
            raise ProtocolError("An integer in the message is too large.")
        return value, pos
    if tag in (_BYTES, _STR):
        if number > end - pos:
            raise ProtocolError("The message is truncated.")
        chunk = data[pos : pos + number]
        if tag == _BYTES:
            return chunk, pos + number
        try:
            return chunk.decode(), pos + number
        except UnicodeDecodeError:
            raise ProtocolError("A text field is not valid UTF-8.") from None
    if number > _MAX_ITEMS or number > end - pos:
        raise ProtocolError("The message claims more items than it holds.")
    if tag == _LIST:
        items: list[Value] = []
        for _ in range(number):
            item, pos = _value(data, pos, depth + 1)
            items.append(item)
        return items, pos
    result: dict[str, Value] = {}
    for _ in range(number):
        key, pos = _value(data, pos, depth + 1)
        if not isinstance(key, str):
            raise ProtocolError("A map key is not text.")
        result[key], pos = _value(data, pos, depth + 1)
    return result, pos


def decode(data: bytes) -> Value:
    """The value encoded in ``data``; the whole of ``data`` must be one value."""
    data = bytes(data)
    value, pos = _value(data, 0, 0)
    if pos != len(data):
        raise ProtocolError("The message has bytes left over after its end.")
    return value
