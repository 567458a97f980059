"""Primitives shared by the generated message modules.

The generated code inlines the common cases (one-byte varints, fixed-width fields via
precompiled ``struct.Struct``); the helpers here handle the rare slow paths.
"""

from __future__ import annotations

import struct
from typing import Any

from broker.protocol.exceptions import (
    InvalidLengthError,
    InvalidVarintError,
    TrailingBytesError,
    TruncatedError,
)

__all__ = [
    "ARRAY_STRUCTS",
    "DEFAULT",
    "ZERO_UUID",
    "Message",
    "raise_length",
    "raise_null",
    "raise_tag_size",
    "raise_truncated",
    "read_uvarint",
    "write_tagged_fields",
    "write_uvarint",
]

#: Placeholder default for mutable fields (lists, structs); each instance gets a fresh value.
DEFAULT: Any = type("_Default", (), {"__repr__": lambda self: "DEFAULT"})()

#: UUIDs are carried as 16 raw bytes; this is Kafka's "no id" value.
ZERO_UUID = bytes(16)

#: Precompiled structs for short arrays of fixed-width elements, by format code and length.
ARRAY_STRUCTS = {code: tuple(struct.Struct(f">{n}{code}") for n in range(32))
                 for code in "?bhiqHd"}
I16 = struct.Struct(">h")
I32 = struct.Struct(">i")
NULL_I16 = b"\xff\xff"
NULL_I32 = b"\xff\xff\xff\xff"


class Message:
    """Base of every generated message and nested struct.

    Subclasses declare ``__slots__`` and ``FIELDS`` (name, kafka type, versions, nullable
    versions, tag, tagged versions, nested class) in wire order; ``unknown_tags`` holds tagged
    fields this codec does not know, as ``(tag, bytes)`` pairs, so they survive a re-encode.
    """

    __slots__ = ()
    FIELDS: tuple[tuple[str, str, tuple[int, int], tuple[int, int] | None, int | None,
                        tuple[int, int] | None, type | None], ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self) -> str:
        args = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__
                         if s != "unknown_tags" or self.unknown_tags)  # type: ignore[attr-defined]
        return f"{type(self).__name__}({args})"

    __hash__ = None  # type: ignore[assignment]


def read_uvarint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Read an unsigned varint of at most 5 bytes (32 bits) at ``pos``.

    Unrolled for speed; running off the end raises IndexError, which the frame decoder
    reports as TruncatedError.
    """
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    b = buf[pos + 1]
    if b < 0x80:
        return result | (b << 7), pos + 2
    result |= (b & 0x7F) << 7
    b = buf[pos + 2]
    if b < 0x80:
        return result | (b << 14), pos + 3
    result |= (b & 0x7F) << 14
    b = buf[pos + 3]
    if b < 0x80:
        return result | (b << 21), pos + 4
    result |= (b & 0x7F) << 21
    b = buf[pos + 4]
    if b > 0x0F:
        raise InvalidVarintError("unsigned varint longer than 5 bytes or above 32 bits")
    return result | (b << 28), pos + 5


def write_uvarint(out: bytearray, value: int) -> None:
    """Append ``value`` (0 <= value < 2**32) as an unsigned varint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def write_tagged_fields(out: bytearray, tags: list[tuple[int, bytes | bytearray]]) -> None:
    """Append a tagged-field section: count, then (tag, size, data) in ascending tag order."""
    tags.sort(key=_first)
    write_uvarint(out, len(tags))
    for tag, data in tags:
        write_uvarint(out, tag)
        write_uvarint(out, len(data))
        out += data


def _first(item: tuple[int, Any]) -> int:
    return item[0]


def raise_truncated(what: str) -> None:
    raise TruncatedError(f"{what} runs past the end of the frame")


def raise_length(what: str, length: int) -> None:
    raise InvalidLengthError(f"{what}: invalid length {length}")


def raise_null(what: str) -> None:
    raise InvalidLengthError(f"{what}: null is not allowed here")


def raise_tag_size(tag: int) -> None:
    raise TrailingBytesError(f"tagged field {tag}: size does not match its content")
