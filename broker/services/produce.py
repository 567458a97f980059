"""Produce: validate record batches and store each as one s2core record spanning its count.

The first phase (in request order on the connection) validates, dedupes idempotent batches
and sequences the appends, so pipelined batches keep their order; the response waits for the
write quorum (acks=1/all) or is never sent (acks=0). Batch bytes are stored as produced:
base offset and partition leader epoch are outside the CRC and are stamped at fetch time.
"""
from __future__ import annotations

import asyncio
import inspect
import logging

from broker.acls import TOPIC, TRANSACTIONAL_ID, WRITE
from broker.producers import BatchRecord, ProducerError, check_sequence, record_batch
from broker.protocol.errors import ErrorCode
from broker.protocol.exceptions import DecodeError
from broker.protocol.messages.produce_response import (
    BatchIndexAndErrorMessage,
    PartitionProduceResponse,
    ProduceResponse,
    TopicProduceResponse,
)
from broker.protocol.records import iter_records, set_log_append_time, split_batches
from broker.services._common import kafka_error
from broker.transactions import TxnError
from s2core.errors import S2Error, StreamNotFound
from s2core.records import AppendRecord

API_KEY = 0
VERSIONS = (3, 13)
ZERO_UUID = bytes(16)
LONG_MAX = 2**63 - 1  # a topic config's "unbounded"
log = logging.getLogger(__name__)


class _Reject(Exception):
    def __init__(self, code: ErrorCode, message: str | None = None, *,
                 record_errors: list[BatchIndexAndErrorMessage] | None = None,
                 log_start_offset: int = -1) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.record_errors = record_errors
        self.log_start_offset = log_start_offset


def unsupported_version(broker, header, request):
    """Produce v0-v2 (message formats v0/v1) are decoded only to be refused cleanly."""
    return ProduceResponse(responses=[
        TopicProduceResponse(name=t.name, partition_responses=[
            PartitionProduceResponse(index=p.index, error_code=ErrorCode.UNSUPPORTED_VERSION,
                                     base_offset=-1)
            for p in t.partition_data])
        for t in request.topic_data], throttle_time_ms=0)


async def handle(broker, conn, header, request):
    version = header.request_api_version
    if request.acks not in (-1, 0, 1):
        return _all(request, ErrorCode.INVALID_REQUIRED_ACKS)
    if request.transactional_id is not None and not broker.allowed(
            conn, WRITE, TRANSACTIONAL_ID, request.transactional_id):
        return _all(request, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    pending = []
    for t in request.topic_data:
        topic = broker.topics.get(t.name) if version < 13 else \
            broker.topics.by_id.get(t.topic_id)
        parts = []
        for p in t.partition_data:
            if topic is not None and not broker.allowed(conn, WRITE, TOPIC, topic.name):
                parts.append((p.index, _error(p.index, ErrorCode.TOPIC_AUTHORIZATION_FAILED)))
                continue
            parts.append((p.index, await _partition(broker, topic, t, p)))
        pending.append((t, parts))
    if request.acks == 0:
        failed = False
        for _, parts in pending:
            for _, res in parts:
                if inspect.iscoroutine(res):
                    res.close()  # nobody waits for the outcome of an acks=0 produce
                elif res.error_code:
                    failed = True
        if failed:  # Kafka's only way to tell an acks=0 producer: close the connection
            conn.close()
        return None
    return _respond(pending, version)


def _ignore(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


async def _respond(pending, version) -> ProduceResponse:
    responses = []
    for t, parts in pending:
        out = []
        for index, res in parts:
            if isinstance(res, PartitionProduceResponse):
                out.append(res)
                continue
            out.append(await res)
        responses.append(TopicProduceResponse(name=t.name, topic_id=t.topic_id,
                                              partition_responses=out))
    return ProduceResponse(responses=responses, throttle_time_ms=0)


def _all(request, code):
    return ProduceResponse(responses=[
        TopicProduceResponse(name=t.name, topic_id=t.topic_id, partition_responses=[
            PartitionProduceResponse(index=p.index, error_code=code, base_offset=-1)
            for p in t.partition_data])
        for t in request.topic_data], throttle_time_ms=0)


def _error(index, code, message=None, record_errors=None, log_start_offset=-1):
    return PartitionProduceResponse(index=index, error_code=code, base_offset=-1,
                                    log_append_time_ms=-1, log_start_offset=log_start_offset,
                                    error_message=message, record_errors=record_errors or [])


async def _partition(broker, topic, t, p):
    """Validate and submit one partition's batches; returns a response or an awaitable."""
    index = p.index
    if topic is None:
        code = ErrorCode.UNKNOWN_TOPIC_ID if t.topic_id and t.topic_id != ZERO_UUID and \
            t.name in (None, "") else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        return _error(index, code)
    if not 0 <= index < topic.partitions:
        return _error(index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    try:
        return await _submit(broker, topic, index, p.records)
    except _Reject as e:
        return _error(index, e.code, e.message, e.record_errors, e.log_start_offset)
    except ProducerError as e:
        return _error(index, e.code, str(e))
    except S2Error as e:
        return _error(index, kafka_error(e), str(e))


async def _submit(broker, topic, index, records):
    if records is None or len(records) == 0:
        raise _Reject(ErrorCode.CORRUPT_MESSAGE, "no record batches")
    try:
        batches = split_batches(records)  # framing and CRC-32C: CORRUPT_MESSAGE
    except DecodeError as e:
        raise _Reject(ErrorCode.CORRUPT_MESSAGE, str(e)) from None
    max_bytes = int(topic.config("max.message.bytes"))
    for _, h in batches:  # an inconsistent count is an invalid record, as in Kafka
        if h.record_count < 1 or h.last_offset_delta + 1 != h.record_count:
            raise _Reject(ErrorCode.INVALID_RECORD,
                          f"record count {h.record_count} does not match lastOffsetDelta "
                          f"{h.last_offset_delta}")
        if h.size > max_bytes:
            raise _Reject(ErrorCode.MESSAGE_TOO_LARGE,
                          f"batch of {h.size} bytes is over max.message.bytes {max_bytes}")
        if h.is_control:
            raise _Reject(ErrorCode.INVALID_RECORD, "clients may not produce control batches")
        if h.is_transactional and h.producer_id < 0:
            raise _Reject(ErrorCode.INVALID_RECORD,
                          "a transactional batch needs a producer id")
    mv = records if isinstance(records, memoryview) else memoryview(records)
    log_append = topic.config("message.timestamp.type") == "LogAppendTime"
    now = broker.store.clock.now_ms()
    compacted = "compact" in topic.config("cleanup.policy")
    window = None if log_append else _timestamp_window(topic)
    if compacted or window is not None:  # every record is looked at, before any is sequenced
        errors = _record_errors(broker, mv, batches, f"{topic.name}-{index}", compacted,
                                window, now)
        if errors:
            raise await _refusal(broker, topic.name, index, errors)
    for pid, epoch in {(h.producer_id, h.producer_epoch) for _, h in batches
                       if h.is_transactional}:
        try:  # (registered as open in the partition before anything is appended)
            await broker.extensions["txn"].before_produce(topic.name, index, pid, epoch,
                                                          ErrorCode.INVALID_PRODUCER_EPOCH)
        except TxnError as e:
            raise _Reject(e.code, str(e)) from None
    appends: list[AppendRecord] = []
    dupes: dict[int, BatchRecord] = {}
    seq_checks = []
    pstate = None
    for i, (pos, h) in enumerate(batches):
        body = mv[pos:pos + h.size]
        if log_append:
            body = bytearray(body)
            set_log_append_time(body, 0, now)
        if h.producer_id >= 0:
            if pstate is None:
                pstate = await broker.producers.state(topic.name, index)
            last_seq = (h.base_sequence + h.last_offset_delta) & 0x7FFFFFFF
            dup = check_sequence(pstate, h.producer_id, h.producer_epoch, h.base_sequence,
                                 last_seq)
            if dup is not None:
                dupes[i] = dup
                continue
            seq_checks.append((len(appends), h, last_seq))
        appends.append(AppendRecord(body=body, timestamp=now if log_append else h.max_timestamp,
                                    span=h.record_count))
    if not appends:
        return _duplicate(broker, topic, index, dupes, log_append, now)
    name = broker.stream(topic.name, index)
    try:
        first, fut = await broker.store.submit_append(broker.basin, name, appends,
                                                      max_bytes=broker.config.max_frame_bytes)
    except StreamNotFound:
        await broker.topics.ensure_partition(topic, index)
        first, fut = await broker.store.submit_append(broker.basin, name, appends,
                                                      max_bytes=broker.config.max_frame_bytes)
    offsets = [first]
    for a in appends[:-1]:
        offsets.append(offsets[-1] + a.span)
    for k, h, last_seq in seq_checks:
        record_batch(pstate, h.producer_id, h.producer_epoch,
                     BatchRecord(h.base_sequence, last_seq, offsets[k], fut), now)
    fut.add_done_callback(_ignore)  # errors are reported by _await_ack, if anyone awaits
    return _await_ack(broker, topic.name, index, fut, first, log_append, now, pstate)


async def _await_ack(broker, topic, index, fut, first, log_append, now, pstate):
    try:
        await fut
    except S2Error as e:
        if pstate is not None:  # the outcome is unknown: make the producer resend in order
            broker.producers.partitions.pop((topic, index), None)
        return _error(index, kafka_error(e), str(e))
    start = await broker.store.first_seq(broker.basin, broker.stream(topic, index))
    return PartitionProduceResponse(index=index, error_code=0, base_offset=first,
                                    log_append_time_ms=now if log_append else -1,
                                    log_start_offset=start)


async def _duplicate(broker, topic, index, dupes, log_append, now):
    first = min(d.offset for d in dupes.values())
    for d in dupes.values():
        if d.done is not None:
            try:
                await d.done
            except S2Error as e:
                return _error(index, kafka_error(e), str(e))
    start = await broker.store.first_seq(broker.basin, broker.stream(topic.name, index))
    return PartitionProduceResponse(index=index, error_code=0, base_offset=first,
                                    log_append_time_ms=now if log_append else -1,
                                    log_start_offset=start)


def _record_errors(broker, mv: memoryview, batches, tp: str, compacted: bool,
                   window: tuple[int, int] | None, now: int) -> list[tuple[int, str, bool]]:
    """Kafka's record validation: (index, reason, whether it is the timestamp) for each
    record refused. A compacted topic refuses records without a key; a topic with a
    timestamp window (`_timestamp_window`) refuses records whose CreateTime is outside
    [now - before, now + after], except those without a timestamp (-1). A record without a
    key is refused for that alone, as in Kafka. Indexes count across the partition's
    batches in request order: with the one batch per partition that clients send (and
    that Kafka requires), this is Kafka's batch_index. Decompresses, capped."""
    errors = []
    first = 0
    why_key = f"Compacted topic cannot accept message without key in topic partition {tp}"
    before, after = window if window is not None else (LONG_MAX, LONG_MAX)
    try:
        for pos, h in batches:  # CRCs were checked by split_batches
            for i, rec in enumerate(iter_records(
                    mv, pos, max_decompressed=broker.config.max_batch_decompressed_bytes,
                    verify=False)):
                ts = rec.timestamp
                if compacted and rec.key is None:
                    errors.append((first + i, why_key, False))
                elif ts != -1 and (now - ts > before or ts - now > after):
                    errors.append((first + i, (
                        f"Timestamp {ts} of message with offset {rec.offset} is out of range. "
                        f"The timestamp should be within [{_long(now - before)}, "
                        f"{_long(now + after)}]"),
                        True))
            first += h.record_count
    except DecodeError as e:
        raise _Reject(ErrorCode.CORRUPT_MESSAGE, str(e)) from None
    return errors


def _long(x: int) -> int:
    """`x` as a Java long (Kafka prints its window's ends with Java's overflow)."""
    return (x + 2**63) % 2**64 - 2**63


def _timestamp_window(topic) -> tuple[int, int] | None:
    """How far before and after the broker's clock a CreateTime record's timestamp may be
    (ms), or None when neither is bounded (the default). As in Kafka, each of
    message.timestamp.before.max.ms and .after.max.ms left at its default takes the
    deprecated message.timestamp.difference.max.ms instead."""
    diff = int(topic.config("message.timestamp.difference.max.ms"))
    before = int(topic.config("message.timestamp.before.max.ms"))
    after = int(topic.config("message.timestamp.after.max.ms"))
    before = diff if before == LONG_MAX else before
    after = diff if after == LONG_MAX else after
    if before == LONG_MAX and after == LONG_MAX:
        return None
    return before, after


async def _refusal(broker, topic: str, index: int,
                   errors: list[tuple[int, str, bool]]) -> _Reject:
    """Kafka's answer to refused records (KIP-467): nothing appended, one record error per
    refused record, the log start offset, and the error of Kafka's record validation:
    INVALID_TIMESTAMP if any timestamp was refused, else INVALID_RECORD with a message
    that lists at most the first three record errors."""
    record_errors = [BatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=why)
                     for i, why, _ in errors]
    try:  # the response carries the log start offset, as Kafka's does
        start = await broker.store.first_seq(broker.basin, broker.stream(topic, index))
    except StreamNotFound:
        start = 0  # a partition nobody has written to yet
    except S2Error:
        start = -1
    if any(is_ts for _, _, is_ts in errors):
        return _Reject(ErrorCode.INVALID_TIMESTAMP,
                       "One or more records have been rejected due to invalid timestamp",
                       log_start_offset=start, record_errors=record_errors)
    shown = ", ".join(f"RecordError(batchIndex={i}, message='{why}')"
                      for i, why, _ in errors[:3])
    message = (f"One or more records have been rejected due to {len(errors)} record errors "
               f"in total, and only showing the first three errors at most: [{shown}]")
    return _Reject(ErrorCode.INVALID_RECORD, message, log_start_offset=start,
                   record_errors=record_errors)
