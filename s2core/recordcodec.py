"""Binary encoding of sequenced records, shared by chunks and segments (pure).

A record is encoded as:

    seq_num u64 | span u32 | timestamp u64 | n_headers u16 |
    (name_len u32 | name | value_len u32 | value) * n_headers | body_len u32 | body

Encoders append buffers to a list (no concatenation of bodies until the final join);
decoders return bytes slices and check every length against the remaining buffer.
"""
from __future__ import annotations

import struct

import crc32c

from s2core.errors import Corrupt
from s2core.records import SequencedRecord

_REC = struct.Struct(">QIQH")
_REC_BARE = struct.Struct(">QIQHI")  # a record without headers: its body length follows
_U32 = struct.Struct(">I")


def encode_record(out: list, seq_num: int, span: int, timestamp: int, headers, body) -> int:
    """Append the encoding of one record to `out`; return its encoded size."""
    if not headers:
        out.append(_REC_BARE.pack(seq_num, span, timestamp, 0, len(body)))
        out.append(body)
        return _REC_BARE.size + len(body)
    out.append(_REC.pack(seq_num, span, timestamp, len(headers)))
    n = _REC.size
    for name, value in headers:
        out.append(_U32.pack(len(name)))
        out.append(name)
        out.append(_U32.pack(len(value)))
        out.append(value)
        n += 8 + len(name) + len(value)
    out.append(_U32.pack(len(body)))
    out.append(body)
    return n + 4 + len(body)


_JOIN_PARTS = 32     # more parts than this, averaging under
_JOIN_BELOW = 4096   # this many bytes a part, are joined before checksumming


def checksum_parts(parts: list, nbytes: int, crc: int) -> tuple[list, int]:
    """Continue CRC-32C `crc` over `parts` (`nbytes` in all); returns the parts to write
    and the CRC. Many small parts (small records) are joined first: one copy costs less
    than a checksum call per part."""
    if len(parts) > _JOIN_PARTS and nbytes < _JOIN_BELOW * len(parts):
        parts = [b"".join(parts)]
    for part in parts:
        crc = crc32c.crc32c(part, crc)
    return parts, crc


def encoded_size(headers, body) -> int:
    n = _REC.size + 4 + len(body)
    for name, value in headers:
        n += 8 + len(name) + len(value)
    return n


def decode_record(buf: bytes | memoryview, pos: int, end: int,
                  views: bool = False) -> tuple[SequencedRecord, int]:
    """Decode one record at `pos`; return it and the position after it. With `views`, the
    body is a memoryview into `buf` (which must be immutable), not a copy."""
    if end - pos < _REC.size:
        raise Corrupt("truncated record header")
    seq_num, span, timestamp, n_headers = _REC.unpack_from(buf, pos)
    pos += _REC.size
    headers = []
    for _ in range(n_headers):
        name, pos = _read_bytes(buf, pos, end)
        value, pos = _read_bytes(buf, pos, end)
        headers.append((name, value))
    start, pos = _span(buf, pos, end)
    body = memoryview(buf)[start:pos] if views else bytes(buf[start:pos])
    return SequencedRecord(seq_num, timestamp, tuple(headers), body, span), pos


def _span(buf, pos: int, end: int) -> tuple[int, int]:
    """The [start, stop) of a length-prefixed byte string at `pos`, checked."""
    if end - pos < 4:
        raise Corrupt("truncated length")
    (n,) = _U32.unpack_from(buf, pos)
    pos += 4
    if n > end - pos:
        raise Corrupt("length past the end of the buffer")
    return pos, pos + n


def _read_bytes(buf, pos: int, end: int) -> tuple[bytes, int]:
    start, stop = _span(buf, pos, end)
    return bytes(buf[start:stop]), stop
