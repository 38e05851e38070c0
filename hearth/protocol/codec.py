"""A small, strict binary encoding for everything Hearth puts on the wire.

Values are ``None``, ``bool``, ``int``, ``bytes``, ``str``, lists and string-keyed maps.
Encoding is deterministic (map keys sorted), so the same value always gives the same
bytes; decoding checks every length against what is left and against limits, and raises
:class:`~hearth.errors.ProtocolError` on anything malformed — never an ``IndexError`` or a
huge allocation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

from hearth.errors import ProtocolError

__all__ = ["Value", "decode", "encode", "uvarint"]

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


def encode(value: Value) -> bytes:
    """The bytes of a value."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ProtocolError("The message is truncated.")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ProtocolError("A number in the message is too long.")

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.pos:
            raise ProtocolError("The message is truncated.")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def value(self, depth: int) -> Value:
        if depth > _MAX_DEPTH:
            raise ProtocolError("The message is nested too deeply.")
        tag = self.byte()
        if tag == _NONE:
            return None
        if tag == _FALSE:
            return False
        if tag == _TRUE:
            return True
        if tag == _INT:
            raw = self.uvarint()
            value = (raw >> 1) ^ -(raw & 1)
            if value.bit_length() > _MAX_INT_BITS:
                raise ProtocolError("An integer in the message is too large.")
            return value
        if tag == _BYTES:
            return self.take(self.uvarint())
        if tag == _STR:
            try:
                return self.take(self.uvarint()).decode()
            except UnicodeDecodeError:
                raise ProtocolError("A text field is not valid UTF-8.") from None
        if tag in (_LIST, _MAP):
            count = self.uvarint()
            if count > _MAX_ITEMS or count > len(self.data) - self.pos:
                raise ProtocolError("The message claims more items than it holds.")
            if tag == _LIST:
                return [self.value(depth + 1) for _ in range(count)]
            result: dict[str, Value] = {}
            for _ in range(count):
                key = self.value(depth + 1)
                if not isinstance(key, str):
                    raise ProtocolError("A map key is not text.")
                result[key] = self.value(depth + 1)
            return result
        raise ProtocolError(f"Unknown value type {tag} in the message.")


def decode(data: bytes) -> Value:
    """The value encoded in ``data``; the whole of ``data`` must be one value."""
    reader = _Reader(bytes(data))
    value = reader.value(0)
    if reader.pos != len(reader.data):
        raise ProtocolError("The message has bytes left over after its end.")
    return value
