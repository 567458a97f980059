"""Segment sections (pure): one stream's record range plus an index by seq_num and timestamp.

An offload writes one object holding sections of many small streams (so a million tiny
streams do not cost a million objects), and streams with enough data get an object of
their own. Layout of a section:

    magic "S2SG" | version u8 | pad 3 | uid 16 | first_seq u64 | end_seq u64 |
    n_records u32 | data_len u32 | crc32c u32                       (56 bytes)
    index: n_records * (seq_num u64 | timestamp u64 | data offset u32)
    data:  records (see recordcodec)

The CRC-32C covers data, then index, then the header with its crc field zeroed (version 2:
the data's CRC is computed as records are added, in the offloader's time slices, before
the header is known). Version 1 sections (header, index, data order) are still read.
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

import crc32c

from s2core.errors import Corrupt
from s2core.recordcodec import checksum_parts, decode_record, encode_record
from s2core.records import SequencedRecord

MAGIC = b"S2SG"
VERSION = 2
_READABLE = (1, 2)
_HDR = struct.Struct(">4sB3x16sQQIII")
_IDX = struct.Struct(">QQI")
HEADER_SIZE = _HDR.size


def build_section(uid: bytes, records: list[SequencedRecord]) -> bytes:
    """Encode a contiguous run of one stream's records."""
    return b"".join(build_section_parts(uid, records))


def build_section_parts(uid: bytes, records: list[SequencedRecord]) -> list:
    """The section as a list of buffers (record bodies by reference, not copied)."""
    b = SectionBuilder(uid)
    b.add(records)
    return b.finish()


class SectionBuilder:
    """Builds one section a run of records at a time (a background task encodes a big
    section in slices and lets appends run in between)."""

    __slots__ = ("uid", "data", "index", "off", "first", "end", "crc")

    def __init__(self, uid: bytes) -> None:
        self.uid = uid
        self.data: list = []
        self.index: list = []
        self.off = 0
        self.first = -1
        self.end = -1
        self.crc = 0  # of the data so far

    def add(self, records: list[SequencedRecord] | list[tuple]) -> None:
        """Append the next contiguous records of the stream (checksummed now, so that
        `finish` has only the index and header left to do). Records may be tail entries
        (plain tuples in SequencedRecord's field order)."""
        if not records:
            return
        if self.first < 0:
            self.first = records[0][0]
        run: list = []
        index, off = self.index, self.off
        pack_index = _IDX.pack
        for seq, ts, headers, body, span in records:
            index.append(pack_index(seq, ts, off))
            off += encode_record(run, seq, span, ts, headers, body)
        run, self.crc = checksum_parts(run, off - self.off, self.crc)
        self.data += run
        self.off = off
        self.end = seq + span

    @property
    def nbytes(self) -> int:
        """The size of the finished section."""
        return HEADER_SIZE + len(self.index) * _IDX.size + self.off

    def finish(self) -> list:
        assert self.index, "a section holds at least one record"
        header = bytearray(_HDR.pack(MAGIC, VERSION, self.uid, self.first, self.end,
                                     len(self.index), self.off, 0))
        index_blob = b"".join(self.index)
        crc = crc32c.crc32c(header, crc32c.crc32c(index_blob, self.crc))
        struct.pack_into(">I", header, HEADER_SIZE - 4, crc)
        return [bytes(header), index_blob, *self.data]


@dataclass(slots=True)
class Section:
    """A decoded, checksum-verified section; records are decoded lazily from the index."""

    uid: bytes
    first_seq: int
    end_seq: int
    seqs: list[int]
    timestamps: list[int]
    offsets: list[int]
    data: memoryview

    def index_of_seq(self, seq: int) -> int:
        """Index of the record containing `seq` (or the first after it)."""
        i = bisect.bisect_right(self.seqs, seq) - 1
        if i < 0:
            return 0
        rec, _ = decode_record(self.data, self.offsets[i], len(self.data))
        return i if rec.end_seq > seq else i + 1

    def index_of_timestamp(self, ts: int) -> int:
        return bisect.bisect_left(self.timestamps, ts)

    def record(self, i: int, views: bool = False) -> SequencedRecord:
        rec, _ = decode_record(self.data, self.offsets[i], len(self.data), views)
        return rec

    def __len__(self) -> int:
        return len(self.seqs)


def parse_section(raw: bytes) -> Section:
    """Verify and index a section; raise Corrupt on any inconsistency."""
    if len(raw) < HEADER_SIZE:
        raise Corrupt("segment section shorter than its header")
    magic, version, uid, first, end, n, data_len, crc = _HDR.unpack_from(raw, 0)
    if magic != MAGIC or version not in _READABLE:
        raise Corrupt("not a segment section")
    index_len = n * _IDX.size
    if len(raw) != HEADER_SIZE + index_len + data_len:
        raise Corrupt("segment section length mismatch")
    zeroed = bytearray(raw[:HEADER_SIZE])
    struct.pack_into(">I", zeroed, HEADER_SIZE - 4, 0)
    mv = memoryview(raw)
    if version == 1:
        got = crc32c.crc32c(mv[HEADER_SIZE:], crc32c.crc32c(zeroed))
    else:
        data_at = HEADER_SIZE + index_len
        got = crc32c.crc32c(zeroed, crc32c.crc32c(mv[HEADER_SIZE:data_at],
                                                  crc32c.crc32c(mv[data_at:])))
    if got != crc:
        raise Corrupt("segment section checksum mismatch")
    seqs, tss, offs = [], [], []
    for i in range(n):
        s, t, o = _IDX.unpack_from(raw, HEADER_SIZE + i * _IDX.size)
        seqs.append(s)
        tss.append(t)
        offs.append(o)
    return Section(uid, first, end, seqs, tss, offs, mv[HEADER_SIZE + index_len:])
