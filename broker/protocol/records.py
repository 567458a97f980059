"""Kafka record batch (magic v2) helpers: pure functions on bytes.

The broker's hot path only touches the 61-byte batch header: validate it and its CRC-32C,
stamp the base offset / partition leader epoch (both outside the CRC) and, for LogAppendTime
topics, the max timestamp (inside the CRC, so it is recomputed). Records are decoded only when
asked (``iter_records``), with decompression bounded by a size cap.

Batch header layout (big-endian), offsets in bytes::

    0 baseOffset int64        8 batchLength int32     12 partitionLeaderEpoch int32
   16 magic int8             17 crc uint32           21 attributes int16
   23 lastOffsetDelta int32  27 baseTimestamp int64  35 maxTimestamp int64
   43 producerId int64       51 producerEpoch int16  53 baseSequence int32
   57 recordCount int32      61 records...

The CRC covers bytes 21 .. end of batch.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

import crc32c

from broker.protocol.compression import (
    DEFAULT_MAX_DECOMPRESSED,
    Compression,
    compress,
    decompress,
)
from broker.protocol.exceptions import CorruptRecordBatchError

__all__ = [
    "BATCH_HEADER_SIZE",
    "BatchHeader",
    "Compression",
    "Record",
    "TimestampType",
    "batch_crc",
    "build_batch",
    "build_control_batch",
    "filter_batch",
    "iter_records",
    "parse_batch_header",
    "set_base_offset",
    "set_log_append_time",
    "set_partition_leader_epoch",
    "split_batches",
    "validate_batch",
]

BATCH_HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: bytes not counted by batchLength
MAGIC = 2
CRC_START = 21
_HEADER = struct.Struct(">qiibIhiqqqhii")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_CRC_OFFSET = 17
_ATTR_OFFSET = 21
_MAX_TS_OFFSET = 35

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

CONTROL_ABORT = 0
CONTROL_COMMIT = 1


class TimestampType(IntEnum):
    """Bit 3 of the batch attributes."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The decoded 61-byte header of one record batch."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType(bool(self.attributes & TIMESTAMP_TYPE_BIT))

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)


@dataclass(frozen=True, slots=True)
class Record:
    """One record: absolute offset and timestamp, key/value (None = null), headers."""

    offset: int
    timestamp: int
    key: bytes | memoryview | None
    value: bytes | memoryview | None
    headers: tuple[tuple[str, bytes | memoryview | None], ...] = ()


def parse_batch_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Decode and sanity-check the header at ``pos`` (the CRC is not checked here)."""
    if len(buf) - pos < BATCH_HEADER_SIZE:
        raise CorruptRecordBatchError("record batch shorter than its 61-byte header")
    h = BatchHeader(*_HEADER.unpack_from(buf, pos))
    if h.magic != MAGIC:
        raise CorruptRecordBatchError(f"unsupported record batch magic {h.magic}")
    if h.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptRecordBatchError(f"batch length {h.batch_length} below the header size")
    if h.record_count < 0:
        raise CorruptRecordBatchError(f"negative record count {h.record_count}")
    if h.attributes & COMPRESSION_MASK > Compression.ZSTD:
        raise CorruptRecordBatchError(f"unknown compression codec {h.attributes & 7}")
    return h


def batch_crc(buf: bytes | bytearray | memoryview, pos: int, size: int) -> int:
    """CRC-32C of a batch of ``size`` bytes at ``pos``: attributes to the end."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    return crc32c.crc32c(view[pos + CRC_START:pos + size])


def validate_batch(buf: bytes | bytearray | memoryview, pos: int = 0, *,
                   check_offsets: bool = False) -> BatchHeader:
    """Header checks + the batch fits in ``buf`` + CRC-32C matches.

    With ``check_offsets`` (what a produce request must satisfy) the batch must hold at least
    one record and ``lastOffsetDelta + 1 == recordCount``.
    """
    h = parse_batch_header(buf, pos)
    if h.size > len(buf) - pos:
        raise CorruptRecordBatchError(f"batch of {h.size} bytes runs past the records section")
    crc = batch_crc(buf, pos, h.size)
    if crc != h.crc:
        raise CorruptRecordBatchError(f"CRC-32C mismatch: stored {h.crc:#x}, computed {crc:#x}")
    if check_offsets and (h.record_count < 1 or h.last_offset_delta + 1 != h.record_count):
        raise CorruptRecordBatchError(
            f"inconsistent record count {h.record_count} for lastOffsetDelta "
            f"{h.last_offset_delta}")
    return h


def split_batches(records: bytes | bytearray | memoryview, *, allow_partial_tail: bool = False,
                  check_offsets: bool = False) -> list[tuple[int, BatchHeader]]:
    """Validate every batch of a ``records`` blob; return (start position, header) of each.

    A trailing partial batch (which Fetch responses may legally carry) is ignored when
    ``allow_partial_tail``; otherwise it is an error, as in a produce request.
    """
    out = []
    pos = 0
    n = len(records)
    while pos < n:
        if n - pos < BATCH_HEADER_SIZE or (
            allow_partial_tail and _I32.unpack_from(records, pos + 8)[0] + LOG_OVERHEAD > n - pos
        ):
            if allow_partial_tail:
                break
            raise CorruptRecordBatchError("partial record batch at the end of the records")
        h = validate_batch(records, pos, check_offsets=check_offsets)
        out.append((pos, h))
        pos += h.size
    return out


def set_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Stamp the base offset in place (outside the CRC, so the CRC stays valid)."""
    _I64.pack_into(buf, pos, base_offset)


def set_partition_leader_epoch(buf: bytearray | memoryview, pos: int, epoch: int) -> None:
    """Stamp the partition leader epoch in place (outside the CRC)."""
    _I32.pack_into(buf, pos + 12, epoch)


def set_log_append_time(buf: bytearray | memoryview, pos: int, timestamp_ms: int) -> None:
    """Mark the batch at ``pos`` LogAppendTime with max timestamp ``timestamp_ms`` and
    recompute its CRC (both fields are covered by it), as a broker does for such topics."""
    h = parse_batch_header(buf, pos)
    if h.size > len(buf) - pos:
        raise CorruptRecordBatchError(f"batch of {h.size} bytes runs past the buffer")
    _I16.pack_into(buf, pos + _ATTR_OFFSET, h.attributes | TIMESTAMP_TYPE_BIT)
    _I64.pack_into(buf, pos + _MAX_TS_OFFSET, timestamp_ms)
    _U32.pack_into(buf, pos + _CRC_OFFSET, batch_crc(buf, pos, h.size))


def _read_varlong(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Zig-zag varint (up to 64 bits) at ``pos``; must end before ``end``."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise CorruptRecordBatchError("record varint runs past its record")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecordBatchError("record varint longer than 10 bytes")


def _read_blob(buf: memoryview, pos: int, end: int) -> tuple[memoryview | None, int]:
    n, pos = _read_varlong(buf, pos, end)
    if n < 0:
        if n != -1:
            raise CorruptRecordBatchError(f"invalid record field length {n}")
        return None, pos
    if pos + n > end:
        raise CorruptRecordBatchError("record field runs past its record")
    return buf[pos:pos + n], pos + n


def iter_records(buf: bytes | bytearray | memoryview, pos: int = 0, *,
                 max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
                 verify: bool = True) -> Iterator[Record]:
    """Decode the records of the batch at ``pos`` (decompressing if needed).

    Keys, values and header values are memoryview slices (of ``buf`` or of the decompressed
    data). Raises CorruptRecordBatchError / DecompressionLimitError on bad input.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    h = validate_batch(view, pos) if verify else parse_batch_header(view, pos)
    for rec, _, _ in _walk(h, _payload(view, pos, h, max_decompressed)):
        yield rec


def _payload(view: memoryview, pos: int, h: BatchHeader, max_decompressed: int) -> memoryview:
    """The batch's records section, decompressed."""
    data = decompress(h.compression, view[pos + BATCH_HEADER_SIZE:pos + h.size],
                      max_decompressed)
    return data if isinstance(data, memoryview) else memoryview(data)


def _walk(h: BatchHeader, data: memoryview) -> Iterator[tuple[Record, int, int]]:
    """Each record of the (decompressed) records section with its start and end in it."""
    log_append = h.timestamp_type == TimestampType.LOG_APPEND_TIME
    p = 0
    n = len(data)
    for _ in range(h.record_count):
        start = p
        length, p = _read_varlong(data, p, n)
        if length < 0 or p + length > n:
            raise CorruptRecordBatchError(f"record length {length} runs past the batch")
        end = p + length
        if p >= end:
            raise CorruptRecordBatchError("empty record")
        p += 1  # record attributes (unused)
        ts_delta, p = _read_varlong(data, p, end)
        off_delta, p = _read_varlong(data, p, end)
        key, p = _read_blob(data, p, end)
        value, p = _read_blob(data, p, end)
        count, p = _read_varlong(data, p, end)
        if count < 0 or count > end - p:
            raise CorruptRecordBatchError(f"invalid record header count {count}")
        headers = []
        for _ in range(count):
            name, p = _read_blob(data, p, end)
            if name is None:
                raise CorruptRecordBatchError("null record header key")
            hval, p = _read_blob(data, p, end)
            try:
                headers.append((name.tobytes().decode(), hval))
            except UnicodeDecodeError:
                raise CorruptRecordBatchError("record header key is not UTF-8") from None
        if p != end:
            raise CorruptRecordBatchError("record has trailing bytes")
        ts = h.max_timestamp if log_append else h.base_timestamp + ts_delta
        yield Record(h.base_offset + off_delta, ts, key, value, tuple(headers)), start, end
    if p != n:
        raise CorruptRecordBatchError("batch has bytes after its last record")


def filter_batch(buf: bytes | bytearray | memoryview, keep: Callable[[Record], bool], *,
                 max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
                 ) -> bytes | bytearray | memoryview | None:
    """The batch (alone in ``buf``) with only the records ``keep`` accepts, as a log
    cleaner writes it: ``buf`` itself when every record stays, None when none does, else
    a new batch with the same base offset, last offset delta, base timestamp, producer
    id, epoch and base sequence, attributes and compression (a compacted batch still spans
    the offsets it was written with, so an idempotent producer's sequence numbers and the
    next batch's offsets still line up). The kept records' bytes are copied unchanged
    (their offset and timestamp deltas stay relative to the same base); the max timestamp
    is that of the kept records (LogAppendTime batches keep theirs)."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    h = validate_batch(view)
    if h.size != len(view):
        raise CorruptRecordBatchError("bytes after the record batch")
    data = _payload(view, 0, h, max_decompressed)
    kept: list[memoryview] = []
    max_ts = -1
    for rec, start, end in _walk(h, data):
        if keep(rec):
            kept.append(data[start:end])
            max_ts = max(max_ts, rec.timestamp)
    if len(kept) == h.record_count:
        return buf
    if not kept:
        return None
    payload = compress(h.compression, b"".join(kept))
    if h.timestamp_type == TimestampType.LOG_APPEND_TIME:
        max_ts = h.max_timestamp
    size = BATCH_HEADER_SIZE + len(payload)
    out = bytearray(_HEADER.pack(
        h.base_offset, size - LOG_OVERHEAD, h.partition_leader_epoch, MAGIC, 0,
        h.attributes, h.last_offset_delta, h.base_timestamp, max_ts, h.producer_id,
        h.producer_epoch, h.base_sequence, len(kept)))
    out += payload
    _U32.pack_into(out, _CRC_OFFSET, batch_crc(out, 0, size))
    return out


def _write_varlong(out: bytearray, value: int) -> None:
    v = (value << 1) ^ (value >> 63)
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _write_blob(out: bytearray, blob: bytes | memoryview | None) -> None:
    if blob is None:
        out.append(1)  # zig-zag -1
        return
    _write_varlong(out, len(blob))
    out += blob


def _encode_record(out: bytearray, rec: Record, base_offset: int, base_ts: int) -> None:
    body = bytearray(b"\x00")  # attributes
    _write_varlong(body, rec.timestamp - base_ts)
    _write_varlong(body, rec.offset - base_offset)
    _write_blob(body, rec.key)
    _write_blob(body, rec.value)
    _write_varlong(body, len(rec.headers))
    for name, value in rec.headers:
        _write_blob(body, name.encode())
        _write_blob(body, value)
    _write_varlong(out, len(body))
    out += body


def build_batch(records: Sequence[Record], *, compression: Compression = Compression.NONE,
                timestamp_type: TimestampType = TimestampType.CREATE_TIME,
                producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
                transactional: bool = False, control: bool = False,
                partition_leader_epoch: int = -1) -> bytearray:
    """Build one v2 batch; base offset/timestamp come from the first record."""
    assert records, "a record batch holds at least one record"
    base_offset = records[0].offset
    base_ts = records[0].timestamp
    raw = bytearray()
    for rec in records:
        _encode_record(raw, rec, base_offset, base_ts)
    payload = compress(compression, raw)
    attributes = int(compression) | (TIMESTAMP_TYPE_BIT if timestamp_type else 0)
    attributes |= (TRANSACTIONAL_BIT if transactional else 0) | (CONTROL_BIT if control else 0)
    size = BATCH_HEADER_SIZE + len(payload)
    out = bytearray(_HEADER.pack(
        base_offset, size - LOG_OVERHEAD, partition_leader_epoch, MAGIC, 0, attributes,
        records[-1].offset - base_offset, base_ts, max(r.timestamp for r in records),
        producer_id, producer_epoch, base_sequence, len(records),
    ))
    out += payload
    _U32.pack_into(out, _CRC_OFFSET, batch_crc(out, 0, size))
    return out


def build_control_batch(*, commit: bool, producer_id: int, producer_epoch: int,
                        coordinator_epoch: int, offset: int, timestamp: int,
                        partition_leader_epoch: int = -1) -> bytearray:
    """A transaction marker (COMMIT or ABORT) batch, as written when a transaction ends."""
    key = struct.pack(">hh", 0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = struct.pack(">hi", 0, coordinator_epoch)
    return build_batch([Record(offset, timestamp, key, value)], producer_id=producer_id,
                       producer_epoch=producer_epoch, transactional=True, control=True,
                       partition_leader_epoch=partition_leader_epoch)
