"""Kafka's record validation on Produce, byte for byte through the codec at every Produce
version we serve: a compacted topic refuses records without a key, and a topic with a
timestamp window (message.timestamp.before/after/difference.max.ms) refuses CreateTime
records outside it, the way Kafka refuses them (KIP-467 record errors)."""
from __future__ import annotations

import inspect

import pytest

from broker.kafka import Broker
from broker.protocol import decode_request, decode_response, encode_request, encode_response
from broker.protocol.errors import ErrorCode
from broker.protocol.messages import _index
from broker.protocol.messages.produce_request import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from broker.protocol.records import Compression, Record, build_batch
from broker.services import produce
from s2core.channel import ChannelConfig
from s2core.records import trim_record

BASIN = "test-basin"
NOW = 1_800_000_000_000
H = 3_600_000
MINUTE = 60_000
VERSIONS = range(produce.VERSIONS[0], produce.VERSIONS[1] + 1)
WHY = "Compacted topic cannot accept message without key in topic partition {}"


class Conn:
    """The connection as the Produce service sees it (acks=0 failures close it)."""

    closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
async def broker(memory_broker):
    b = await memory_broker(replicas=3, channel=ChannelConfig(offload_target_bytes=4096,
                                                              offload_interval_s=0.02),
                            basin=BASIN)
    await b.topics.create("compacted", 2, {"cleanup.policy": "compact"})
    await b.topics.create("both", 1, {"cleanup.policy": "delete,compact"})
    await b.topics.create("plain", 1, {})
    await b.topics.create("window", 1, {"message.timestamp.before.max.ms": str(H),
                                        "message.timestamp.after.max.ms": str(MINUTE)})
    await b.topics.create("old-knob", 1, {"message.timestamp.difference.max.ms": str(H)})
    await b.topics.create("past-only", 1, {"message.timestamp.before.max.ms": str(H)})
    await b.topics.create("window-compacted", 1, {"message.timestamp.before.max.ms": str(H),
                                                  "cleanup.policy": "compact"})
    await b.topics.create("window-log-append", 1, {"message.timestamp.before.max.ms": str(H),
                                                   "message.timestamp.type": "LogAppendTime"})
    b.store.clock.now_ms = lambda: NOW  # the broker's clock, which the window is around
    return b


def batch(keys: list[bytes | None], compression: Compression = Compression.NONE) -> bytes:
    return bytes(build_batch([Record(i, 1_000 + i, k, b"v%d" % i) for i, k in enumerate(keys)],
                             compression=compression))


async def produce_once(b: Broker, version: int, topic: str, partition: int, records: bytes,
                       acks: int = -1, conn: Conn | None = None):
    """Send one Produce through the codec and the service; the decoded partition response
    (None for acks=0)."""
    t = b.topics.get(topic)
    req = ProduceRequest(acks=acks, timeout_ms=5000, topic_data=[TopicProduceData(
        name=topic if version < 13 else "", topic_id=t.id if version >= 13 else bytes(16),
        partition_data=[PartitionProduceData(index=partition, records=records)])])
    header = _index.request_header.RequestHeader(produce.API_KEY, version, 7, "test")
    frame = b"".join(encode_request(header, req))
    header, req = decode_request(memoryview(bytearray(frame))[4:])
    resp = await produce.handle(b, conn or Conn(), header, req)
    if resp is None:
        return None
    if inspect.isawaitable(resp):
        resp = await resp
    wire = b"".join(encode_response(7, resp, produce.API_KEY, version))
    _, got = decode_response(memoryview(wire)[4:], produce.API_KEY, version)
    [topic_resp] = got.responses
    [part] = topic_resp.partition_responses
    return part


async def tail(b: Broker, topic: str, partition: int) -> int:
    return (await b.store.check_tail(BASIN, b.stream(topic, partition))).seq_num


def expected_message(n: int, shown: list[int], tp: str) -> str:
    errors = ", ".join(f"RecordError(batchIndex={i}, message='{WHY.format(tp)}')" for i in shown)
    return (f"One or more records have been rejected due to {n} record errors in total, "
            f"and only showing the first three errors at most: [{errors}]")


@pytest.mark.parametrize("version", VERSIONS)
async def test_keyless_records_reject_the_batch_with_record_errors(broker, version):
    b = broker
    for _ in range(3):  # keyed records are accepted; then the log start moves to 2
        ok = await produce_once(b, version, "compacted", 1, batch([b"k"]))
        assert ok.error_code == ErrorCode.NONE
    await b.store.append(BASIN, b.stream("compacted", 1), [trim_record(2)])
    before = await tail(b, "compacted", 1)

    keys = [None if i % 10 == 0 else b"key-%d" % i for i in range(25)]  # 0, 10, 20 keyless
    part = await produce_once(b, version, "compacted", 1, batch(keys))

    assert part.index == 1
    assert part.error_code == ErrorCode.INVALID_RECORD
    assert part.base_offset == -1
    assert part.log_append_time_ms == -1
    assert part.log_start_offset == (2 if version >= 5 else -1)  # a field from v5
    if version >= 8:  # the fields exist from Produce v8 (KIP-467)
        why = WHY.format("compacted-1")
        assert [(e.batch_index, e.batch_index_error_message) for e in part.record_errors] == \
            [(0, why), (10, why), (20, why)]
        assert part.error_message == expected_message(3, [0, 10, 20], "compacted-1")
    else:
        assert part.record_errors == [] and part.error_message is None
    assert await tail(b, "compacted", 1) == before, "nothing of a refused batch is stored"


async def test_message_lists_first_three_of_many_and_compressed_batches_are_checked(broker):
    keys = [None, b"a", None, None, b"b", None, None]
    part = await produce_once(broker, 11, "both", 0, batch(keys, Compression.ZSTD))
    assert part.error_code == ErrorCode.INVALID_RECORD
    assert [e.batch_index for e in part.record_errors] == [0, 2, 3, 5, 6]
    assert part.error_message == expected_message(5, [0, 2, 3], "both-0")
    assert part.log_start_offset == 0
    assert await tail(broker, "both", 0) == 0


async def test_indexes_count_across_batches_and_all_batches_are_refused(broker):
    two = batch([b"a", b"b"]) + batch([b"c", None, b"d"])
    part = await produce_once(broker, 9, "compacted", 0, two)
    assert part.error_code == ErrorCode.INVALID_RECORD
    assert [e.batch_index for e in part.record_errors] == [3]
    assert await tail(broker, "compacted", 0) == 0


async def test_keyed_and_non_compacted_records_are_accepted(broker):
    part = await produce_once(broker, 9, "compacted", 0, batch([b"a", b"b"]))
    assert (part.error_code, part.base_offset, part.record_errors) == (ErrorCode.NONE, 0, [])
    part = await produce_once(broker, 9, "plain", 0, batch([None, None]))
    assert (part.error_code, part.base_offset, part.record_errors) == (ErrorCode.NONE, 0, [])
    assert await tail(broker, "plain", 0) == 2


async def test_acks_0_refusal_closes_the_connection(broker):
    conn = Conn()
    assert await produce_once(broker, 9, "compacted", 0, batch([None]), acks=0,
                              conn=conn) is None
    assert conn.closed
    assert await tail(broker, "compacted", 0) == 0



def stamped(stamps: list[int], keys: list[bytes | None] | None = None,
            compression: Compression = Compression.NONE) -> bytes:
    keys = keys or [b"k"] * len(stamps)
    return bytes(build_batch([Record(i, ts, k, b"v%d" % i)
                              for i, (ts, k) in enumerate(zip(stamps, keys))],
                             compression=compression))


def ts_why(ts: int, offset: int, low: int, high: int) -> str:
    return (f"Timestamp {ts} of message with offset {offset} is out of range. The timestamp "
            f"should be within [{low}, {high}]")


@pytest.mark.parametrize("version", VERSIONS)
async def test_records_outside_the_timestamp_window_refuse_the_batch(broker, version):
    b = broker
    ok = await produce_once(b, version, "window", 0, stamped([NOW - H, NOW, NOW + MINUTE]))
    assert (ok.error_code, ok.base_offset) == (ErrorCode.NONE, 0), "the ends are inside"
    stamps = [NOW, NOW - H - 1, NOW - 5, NOW + MINUTE + 1, -1, NOW + 3]
    part = await produce_once(b, version, "window", 0, stamped(stamps))
    assert part.error_code == ErrorCode.INVALID_TIMESTAMP
    assert part.base_offset == -1
    assert part.log_start_offset == (0 if version >= 5 else -1)
    if version >= 8:
        low, high = NOW - H, NOW + MINUTE
        assert [(e.batch_index, e.batch_index_error_message) for e in part.record_errors] == [
            (1, ts_why(NOW - H - 1, 1, low, high)), (3, ts_why(NOW + MINUTE + 1, 3, low, high))]
        assert part.error_message == \
            "One or more records have been rejected due to invalid timestamp"
    else:
        assert part.record_errors == [] and part.error_message is None
    assert await tail(b, "window", 0) == 3, "nothing of a refused batch is stored"


async def test_the_deprecated_difference_bounds_both_sides_and_one_side_alone(broker):
    part = await produce_once(broker, 9, "old-knob", 0, stamped([NOW + H + 1, NOW - H - 1]))
    assert part.error_code == ErrorCode.INVALID_TIMESTAMP
    assert [e.batch_index for e in part.record_errors] == [0, 1]
    assert part.record_errors[0].batch_index_error_message == \
        ts_why(NOW + H + 1, 0, NOW - H, NOW + H)
    # only the past is bounded: the future end is Long.MAX_VALUE past now, printed as Java
    # prints the overflowed sum
    part = await produce_once(broker, 9, "past-only", 0, stamped([NOW + 10 * H, NOW - 2 * H]))
    assert part.error_code == ErrorCode.INVALID_TIMESTAMP
    assert [(e.batch_index, e.batch_index_error_message) for e in part.record_errors] == [
        (1, ts_why(NOW - 2 * H, 1, NOW - H, NOW + 2**63 - 1 - 2**64))]


async def test_compressed_batches_and_later_batches_are_judged_too(broker):
    two = stamped([NOW, NOW]) + stamped([NOW, NOW - 2 * H], compression=Compression.LZ4)
    part = await produce_once(broker, 9, "window", 0, two)
    assert part.error_code == ErrorCode.INVALID_TIMESTAMP
    assert [e.batch_index for e in part.record_errors] == [3]
    assert await tail(broker, "window", 0) == 0


async def test_a_missing_key_is_the_error_of_its_record_and_a_timestamp_sets_the_code(broker):
    """As Kafka's validator: a record's key is judged first; any refused timestamp in the
    request makes the partition's error INVALID_TIMESTAMP, with every record error."""
    part = await produce_once(broker, 9, "window-compacted", 0,
                              stamped([NOW - 2 * H, NOW, NOW - 2 * H], [None, None, b"k"]))
    assert part.error_code == ErrorCode.INVALID_TIMESTAMP
    why = WHY.format("window-compacted-0")
    assert [(e.batch_index, e.batch_index_error_message) for e in part.record_errors] == [
        (0, why), (1, why), (2, ts_why(NOW - 2 * H, 2, NOW - H, NOW + 2**63 - 1 - 2**64))]
    assert part.error_message == \
        "One or more records have been rejected due to invalid timestamp"


async def test_log_append_time_topics_and_unbounded_topics_take_any_timestamp(broker):
    part = await produce_once(broker, 9, "window-log-append", 0, stamped([0, NOW + 10 * H]))
    assert (part.error_code, part.log_append_time_ms) == (ErrorCode.NONE, NOW)
    part = await produce_once(broker, 9, "plain", 0, stamped([0, NOW + 10 * H]))
    assert (part.error_code, part.base_offset) == (ErrorCode.NONE, 0)


async def test_acks_0_timestamp_refusal_closes_the_connection(broker):
    conn = Conn()
    assert await produce_once(broker, 9, "window", 0, stamped([0]), acks=0, conn=conn) is None
    assert conn.closed
    assert await tail(broker, "window", 0) == 0
