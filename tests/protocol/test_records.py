"""Record batch v2: header, CRC, in-place stamping, iteration, compression, splitting."""

from __future__ import annotations

import struct
from collections.abc import Callable

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.protocol.compression import XERIAL_MAGIC
from broker.protocol.exceptions import CorruptRecordBatchError, DecompressionLimitError
from broker.protocol.records import (
    BATCH_HEADER_SIZE,
    Compression,
    Record,
    TimestampType,
    build_batch,
    build_control_batch,
    filter_batch,
    iter_records,
    parse_batch_header,
    set_base_offset,
    set_log_append_time,
    set_partition_leader_epoch,
    split_batches,
    validate_batch,
)

blobs = st.none() | st.binary(max_size=30)
record_lists = st.lists(
    st.tuples(blobs, blobs, st.lists(st.tuples(st.text(max_size=5), blobs), max_size=2)),
    min_size=1, max_size=8,
)


def _records(raw: list, base: int = 100, ts: int = 1_700_000_000_000) -> list[Record]:
    return [Record(base + i, ts + 3 * i, k, v, tuple(h)) for i, (k, v, h) in enumerate(raw)]


def _plain(rec: Record) -> tuple:
    def b(x: object) -> object:
        return None if x is None else bytes(x)  # type: ignore[arg-type]
    return (rec.offset, rec.timestamp, b(rec.key), b(rec.value),
            tuple((k, b(v)) for k, v in rec.headers))


@settings(max_examples=40, deadline=None)
@given(raw=record_lists, codec=st.sampled_from(list(Compression)))
def test_build_then_iterate(raw: list, codec: Compression) -> None:
    recs = _records(raw)
    batch = build_batch(recs, compression=codec, producer_id=7, producer_epoch=2,
                        base_sequence=5)
    h = validate_batch(batch, check_offsets=True)
    assert (h.compression, h.record_count, h.producer_id, h.producer_epoch, h.base_sequence) == (
        codec, len(recs), 7, 2, 5)
    assert h.size == len(batch)
    assert [_plain(r) for r in iter_records(batch)] == [_plain(r) for r in recs]


def test_header_fields_and_attributes() -> None:
    batch = build_batch(_records([(b"k", b"v", [])] * 3), transactional=True,
                        partition_leader_epoch=4)
    h = parse_batch_header(batch)
    assert (h.base_offset, h.last_offset_delta, h.last_offset, h.partition_leader_epoch) == (
        100, 2, 102, 4)
    assert h.is_transactional and not h.is_control
    assert h.timestamp_type == TimestampType.CREATE_TIME
    assert h.max_timestamp == h.base_timestamp + 6
    assert len(batch) == BATCH_HEADER_SIZE + h.batch_length - 49


def test_crc_detects_corruption_anywhere_after_attributes() -> None:
    batch = build_batch(_records([(b"key", b"value", [("h", b"x")])]))
    for i in range(21, len(batch)):
        bad = bytearray(batch)
        bad[i] ^= 0x01
        with pytest.raises(CorruptRecordBatchError):
            validate_batch(bad)


def test_stamping_base_offset_and_epoch_in_place_keeps_crc() -> None:
    batch = build_batch(_records([(None, b"a", []), (None, b"b", [])]))
    view = memoryview(batch)
    set_base_offset(view, 0, 5000)
    set_partition_leader_epoch(view, 0, 9)
    h = validate_batch(batch)
    assert (h.base_offset, h.partition_leader_epoch) == (5000, 9)
    assert [r.offset for r in iter_records(batch)] == [5000, 5001]


def test_log_append_time_sets_type_max_timestamp_and_crc() -> None:
    batch = build_batch(_records([(None, b"a", []), (None, b"b", [])]),
                        compression=Compression.GZIP)
    set_log_append_time(batch, 0, 42_000)
    h = validate_batch(batch)
    assert h.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert h.max_timestamp == 42_000 and h.compression == Compression.GZIP
    assert [r.timestamp for r in iter_records(batch)] == [42_000, 42_000]
    with pytest.raises(CorruptRecordBatchError):
        set_log_append_time(batch[:-1], 0, 1)


def test_control_batch() -> None:
    batch = build_control_batch(commit=True, producer_id=3, producer_epoch=1,
                                coordinator_epoch=8, offset=77, timestamp=1)
    h = validate_batch(batch)
    assert h.is_control and h.is_transactional and h.base_offset == 77
    (rec,) = iter_records(batch)
    assert bytes(rec.key) == struct.pack(">hh", 0, 1)
    assert bytes(rec.value) == struct.pack(">hi", 0, 8)


def test_split_batches_and_partial_tail() -> None:
    a = build_batch(_records([(None, b"a", [])], base=0))
    b = build_batch(_records([(None, b"b" * 100, [])] * 2, base=1))
    blob = memoryview(bytes(a + b + b[:70]))
    assert [(pos, h.base_offset) for pos, h in split_batches(blob, allow_partial_tail=True)] == [
        (0, 0), (len(a), 1)]
    with pytest.raises(CorruptRecordBatchError):
        split_batches(blob)
    with pytest.raises(CorruptRecordBatchError):
        split_batches(blob[: len(a) + 30])
    assert split_batches(blob[: len(a) + 30], allow_partial_tail=True)[0][0] == 0


@pytest.mark.parametrize("bad", [
    lambda b: b.__setitem__(16, 1),                         # magic v1
    lambda b: struct.pack_into(">i", b, 8, 10),             # batchLength below header
    lambda b: struct.pack_into(">i", b, 57, -1),            # negative record count
    lambda b: struct.pack_into(">i", b, 8, 10_000),         # runs past the blob
    lambda b: struct.pack_into(">h", b, 21, 7),             # unknown codec
])
def test_header_validation(bad: Callable[[bytearray], None]) -> None:
    batch = build_batch(_records([(None, b"v", [])]))
    bad(batch)
    with pytest.raises(CorruptRecordBatchError):
        validate_batch(batch)


def test_record_count_must_match_offsets_for_produce() -> None:
    batch = build_batch([Record(0, 0, None, b"a"), Record(5, 0, None, b"b")])
    validate_batch(batch)
    with pytest.raises(CorruptRecordBatchError):
        validate_batch(batch, check_offsets=True)


@pytest.mark.parametrize("codec", [c for c in Compression if c != Compression.NONE])
def test_decompression_cap(codec: Compression) -> None:
    batch = build_batch([Record(0, 0, None, bytes(4_000_000))], compression=codec)
    assert len(batch) < 400_000
    with pytest.raises(DecompressionLimitError):
        list(iter_records(batch, max_decompressed=1_000_000))
    (rec,) = iter_records(batch, max_decompressed=5_000_000)
    assert len(rec.value) == 4_000_000


def _rebuild_with_payload(batch: bytearray, payload: bytes, codec: Compression) -> bytearray:
    out = bytearray(batch[:BATCH_HEADER_SIZE]) + payload
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, int(codec))
    from broker.protocol.records import batch_crc
    struct.pack_into(">I", out, 17, batch_crc(out, 0, len(out)))
    return out


def test_snappy_raw_and_xerial_framed() -> None:
    recs = _records([(b"k", b"v" * 50, [])] * 3)
    plain = build_batch(recs)
    raw_section = bytes(plain[BATCH_HEADER_SIZE:])
    raw = _rebuild_with_payload(plain, bytes(cramjam.snappy.compress_raw(raw_section)),
                                Compression.SNAPPY)
    framed = build_batch(recs, compression=Compression.SNAPPY)
    assert bytes(framed[BATCH_HEADER_SIZE:]).startswith(XERIAL_MAGIC)
    for batch in (raw, framed):
        assert [_plain(r) for r in iter_records(batch)] == [_plain(r) for r in recs]


def test_garbage_compressed_payload_is_a_typed_error() -> None:
    plain = build_batch(_records([(b"k", b"v", [])]))
    for codec in (Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
        bad = _rebuild_with_payload(plain, b"\x00not compressed at all" * 3, codec)
        with pytest.raises(CorruptRecordBatchError):
            list(iter_records(bad))


def test_cross_check_with_kafka_python() -> None:
    kafka_records = pytest.importorskip("kafka.record.default_records")
    for codec in (0, 1):  # none, gzip: what kafka-python can do without extra packages
        builder = kafka_records.DefaultRecordBatchBuilder(
            magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
            producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
        for i in range(5):
            builder.append(i, timestamp=1000 + i, key=b"k%d" % i, value=b"v" * i,
                           headers=[("h", b"x")])
        theirs = bytes(builder.build())
        h = validate_batch(theirs, check_offsets=True)
        assert h.compression == codec and h.record_count == 5
        got = [_plain(r) for r in iter_records(theirs)]
        assert got == [(i, 1000 + i, b"k%d" % i, b"v" * i, (("h", b"x"),)) for i in range(5)]
        ours = build_batch([Record(i, 1000 + i, b"k%d" % i, b"v" * i, (("h", b"x"),))
                            for i in range(5)], compression=Compression(codec))
        parsed = kafka_records.DefaultRecordBatch(bytes(ours))
        assert parsed.validate_crc()
        assert [(r.offset, r.timestamp, r.key, r.value) for r in parsed] == [
            (i, 1000 + i, b"k%d" % i, b"v" * i) for i in range(5)]


@settings(max_examples=40, deadline=None)
@given(raw=record_lists, codec=st.sampled_from(list(Compression)),
       mask=st.lists(st.booleans(), min_size=8, max_size=8))
def test_filter_batch_keeps_offsets_producer_fields_and_codec(raw: list, codec: Compression,
                                                             mask: list[bool]) -> None:
    recs = _records(raw)
    batch = bytes(build_batch(recs, compression=codec, producer_id=7, producer_epoch=2,
                              base_sequence=5, partition_leader_epoch=3))
    wanted = [r for i, r in enumerate(recs) if mask[i]]
    out = filter_batch(batch, lambda r: mask[r.offset - 100])
    if len(wanted) == len(recs):
        assert out is batch
        return
    if not wanted:
        assert out is None
        return
    h, old = validate_batch(out), parse_batch_header(batch)
    assert h.size == len(out) and h.record_count == len(wanted)
    assert (h.base_offset, h.last_offset_delta, h.base_timestamp, h.attributes,
            h.producer_id, h.producer_epoch, h.base_sequence, h.partition_leader_epoch) == (
        old.base_offset, old.last_offset_delta, old.base_timestamp, old.attributes,
        old.producer_id, old.producer_epoch, old.base_sequence, old.partition_leader_epoch)
    assert h.max_timestamp == max(r.timestamp for r in wanted)
    assert [_plain(r) for r in iter_records(out)] == [_plain(r) for r in wanted]


def test_filter_batch_log_append_time_and_bad_input() -> None:
    batch = build_batch(_records([(b"k", b"v", []), (b"j", b"w", [])]))
    set_log_append_time(batch, 0, 42)
    out = filter_batch(bytes(batch), lambda r: r.key == b"j")
    h = validate_batch(out)
    assert h.max_timestamp == 42 and h.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert [(r.offset, r.timestamp) for r in iter_records(out)] == [(101, 42)]
    with pytest.raises(CorruptRecordBatchError):
        filter_batch(bytes(batch) + b"x", lambda r: True)
    bad = bytearray(batch)
    bad[-1] ^= 1
    with pytest.raises(CorruptRecordBatchError):
        filter_batch(bytes(bad), lambda r: True)
