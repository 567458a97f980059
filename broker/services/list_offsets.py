"""ListOffsets: earliest, latest, max timestamp, and the first offset at or after a time."""
from __future__ import annotations

import struct

from broker.acls import DESCRIBE, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.exceptions import DecodeError
from broker.protocol.messages.list_offsets_response import (
    ListOffsetsPartitionResponse,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
)
from broker.protocol.records import iter_records
from broker.services._common import kafka_error
from s2core.errors import S2Error

API_KEY = 2
VERSIONS = (1, 10)
_BASE = struct.Struct(">q")
LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED = -1, -2, -3, -4, -5


async def handle(broker, conn, header, request):
    topics = []
    for t in request.topics:
        topic = broker.topics.get(t.name)
        denied = not broker.allowed(conn, DESCRIBE, TOPIC, t.name)
        parts = []
        for p in t.partitions:
            if denied:
                parts.append(_reply(p.partition_index, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            if topic is None or not 0 <= p.partition_index < topic.partitions:
                parts.append(_reply(p.partition_index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            try:
                ts, off = await _lookup(broker, topic.name, p.partition_index, p.timestamp,
                                        getattr(request, "isolation_level", 0) == 1)
            except S2Error as e:
                parts.append(_reply(p.partition_index, kafka_error(e)))
                continue
            parts.append(_reply(p.partition_index, 0, ts, off))
        topics.append(ListOffsetsTopicResponse(name=t.name, partitions=parts))
    return ListOffsetsResponse(throttle_time_ms=0, topics=topics)


def _reply(index, code, ts=-1, offset=-1):
    return ListOffsetsPartitionResponse(partition_index=index, error_code=code, timestamp=ts,
                                        offset=offset, leader_epoch=0 if offset >= 0 else -1)


async def _lookup(broker, topic, partition, target, committed=False) -> tuple[int, int]:
    start, hw = await broker.partition_bounds(topic, partition)
    if target == LATEST or target == LATEST_TIERED:
        if committed:  # read_committed: the last stable offset (broker/transactions.py)
            txns = broker.extensions["txn"]
            await txns.partition(topic, partition)
            return -1, txns.last_stable(topic, partition, hw)
        return -1, hw
    if target in (EARLIEST, EARLIEST_LOCAL):
        return -1, start
    name = broker.stream(topic, partition)
    store = broker.store
    if target == MAX_TIMESTAMP:
        if hw == start:
            return -1, -1
        tail = await store.check_tail(broker.basin, name)
        batch = await store.read(broker.basin, name, timestamp=tail.timestamp, count=1)
        return _max_in(broker, batch.records, start)
    if target < 0:
        return -1, -1
    # stream timestamps are the running max of batch max timestamps, so the first stream
    # record at or after `target` is the first batch that may hold a record at or after it
    batch = await store.read(broker.basin, name, timestamp=target, count=16, clamp=True)
    for rec in batch.records:
        for ts, offset in _records(broker, rec):
            if ts >= target and offset >= start:
                return ts, offset
    return -1, -1


def _records(broker, rec) -> list[tuple[int, int]]:
    """(timestamp, offset) of each Kafka record of a stored batch (offsets are the
    stream's: the stored base offset is whatever the producer sent)."""
    if rec.is_command():
        return []
    try:
        stored_base = _BASE.unpack_from(rec.body, 0)[0]
        return [(kr.timestamp, rec.seq_num + kr.offset - stored_base)
                for kr in iter_records(rec.body, 0, verify=False,
                                       max_decompressed=broker.config.max_batch_decompressed_bytes)]
    except (DecodeError, struct.error):
        return []


def _max_in(broker, records, start) -> tuple[int, int]:
    best = (-1, -1)
    for rec in records:
        for ts, offset in _records(broker, rec):
            if offset >= start and ts > best[0]:
                best = (ts, offset)
    return best
