"""Chunk format (pure).

A chunk multiplexes records of many streams. Layout:

    magic "S2CK" | version u8 | pad u8*3 | epoch u64 | seq u64 | durable_upto i64 |
    created_ms u64 | n_entries u32 | body_len u32 | crc32c u32       (52 bytes)
    body: entries, each: stream uid (16 bytes) | record (see recordcodec)

The CRC-32C covers the header (with the CRC field zeroed) and the body, so a torn,
truncated or bit-flipped replica is detected. `epoch` is the writer's lease epoch and
`durable_upto` the highest chunk seq of this epoch the writer knew to be on a quorum when it
wrote this one: recovery needs quorum reads only above it (the window of uncertainty).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

from s2core.errors import Corrupt
from s2core.recordcodec import checksum_parts, decode_record, encode_record
from s2core.records import SequencedRecord

MAGIC = b"S2CK"
VERSION = 1
_HDR = struct.Struct(">4sB3xQQqQIII")
HEADER_SIZE = _HDR.size
UID_SIZE = 16


@dataclass(slots=True)
class ChunkHeader:
    """Decoded chunk header."""

    epoch: int
    seq: int
    durable_upto: int
    created_ms: int
    n_entries: int


class ChunkBuilder:
    """Accumulates entries of one chunk; `finish` produces the bytes to replicate."""

    __slots__ = ("parts", "size", "n_entries")

    def __init__(self) -> None:
        self.parts: list = []
        self.size = 0
        self.n_entries = 0

    def add(self, uid: bytes, seq_num: int, span: int, timestamp: int, headers, body) -> None:
        assert len(uid) == UID_SIZE
        self.parts.append(uid)
        self.size += UID_SIZE + encode_record(self.parts, seq_num, span, timestamp, headers, body)
        self.n_entries += 1

    def finish(self, epoch: int, seq: int, durable_upto: int, created_ms: int) -> list:
        """The chunk as a list of buffers (header first), never joined here: a local log
        replica writes them with one writev, other stores join them once."""
        header = bytearray(_HDR.pack(MAGIC, VERSION, epoch, seq, durable_upto, created_ms,
                                     self.n_entries, self.size, 0))
        parts, crc = checksum_parts(self.parts, self.size, crc32c.crc32c(header))
        struct.pack_into(">I", header, HEADER_SIZE - 4, crc)
        return [bytes(header), *parts]


def decode_header(data: bytes) -> ChunkHeader:
    """Decode and check a chunk's header and checksum; raise Corrupt if anything is off."""
    if len(data) < HEADER_SIZE:
        raise Corrupt("chunk shorter than its header")
    magic, version, epoch, seq, durable_upto, created_ms, n_entries, body_len, crc = \
        _HDR.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise Corrupt("not a chunk (bad magic or version)")
    if len(data) != HEADER_SIZE + body_len:
        raise Corrupt("chunk length does not match its header")
    zeroed = bytearray(data[:HEADER_SIZE])
    struct.pack_into(">I", zeroed, HEADER_SIZE - 4, 0)
    if crc32c.crc32c(memoryview(data)[HEADER_SIZE:], crc32c.crc32c(zeroed)) != crc:
        raise Corrupt("chunk checksum mismatch")
    return ChunkHeader(epoch, seq, durable_upto, created_ms, n_entries)


def decode_entries(data: bytes, header: ChunkHeader) -> list[tuple[bytes, SequencedRecord]]:
    """The (stream uid, record) entries of a chunk whose header was already checked."""
    out = []
    pos, end = HEADER_SIZE, len(data)
    for _ in range(header.n_entries):
        if end - pos < UID_SIZE:
            raise Corrupt("truncated chunk entry")
        uid = bytes(data[pos:pos + UID_SIZE])
        rec, pos = decode_record(data, pos + UID_SIZE, end)
        out.append((uid, rec))
    if pos != end:
        raise Corrupt("trailing bytes in chunk")
    return out


def chunk_key(channel: str, epoch: int, seq: int) -> str:
    return f"wal/{channel}/{epoch:010d}/{seq:012d}"


def parse_chunk_key(key: str) -> tuple[int, int] | None:
    parts = key.rsplit("/", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[1]), int(parts[2])
