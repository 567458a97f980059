"""Fetch: stored batches back to consumers, unchanged but for two header fields.

Each s2core record of a partition stream is one Kafka batch; the response carries, per
batch, a fresh 16-byte prefix (base offset = the record's seq_num, batch length, partition
leader epoch) followed by a view of the stored bytes after it: nothing is copied or
re-encoded. Long polls wait on the partitions' tails until min_bytes or max_wait.
"""
from __future__ import annotations

import asyncio
import struct

from broker.acls import READ, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.fetch_response import (
    AbortedTransaction,
    FetchableTopicResponse,
    FetchResponse,
    PartitionData,
)
from broker.server import RecordParts
from broker.services._common import kafka_error
from s2core.errors import ReadPastTail, S2Error, StreamNotFound

API_KEY = 1
VERSIONS = (4, 16)
ZERO_UUID = bytes(16)
_PREFIX = struct.Struct(">qii")
MAX_WAIT_MS = 30_000


async def handle(broker, conn, header, request):
    return _fetch(broker, header.request_api_version, request, conn)


def _resolve(broker, version, t):
    if version >= 13:
        topic = broker.topics.by_id.get(t.topic_id)
        return topic, (ErrorCode.UNKNOWN_TOPIC_ID if topic is None else 0)
    topic = broker.topics.get(t.topic)
    return topic, (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if topic is None else 0)


async def _fetch(broker, version, request, conn=None) -> FetchResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(request.max_wait_ms, 0), MAX_WAIT_MS) / 1000
    while True:
        result, total, watch = await _read_all(broker, version, request, conn)
        left = deadline - loop.time()
        if total >= request.min_bytes or left <= 0 or not watch:
            return result
        waits = [asyncio.ensure_future(broker.store.wait_for_tail(broker.basin, name, seq, left))
                 for name, seq in watch]
        done, rest = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        for w in rest:
            w.cancel()
        if not any(not w.cancelled() and w.exception() is None and w.result() for w in done):
            return (await _read_all(broker, version, request, conn))[0]


async def _read_all(broker, version, request, conn=None):
    budget = request.max_bytes if version >= 3 else 2**31 - 1
    total = 0
    watch = []
    responses = []
    for t in request.topics:
        topic, err = _resolve(broker, version, t)
        if not err and not broker.allowed(conn, READ, TOPIC, topic.name):
            err = ErrorCode.TOPIC_AUTHORIZATION_FAILED
        parts = []
        for p in t.partitions:
            if err:
                parts.append(_error(p.partition, err))
                continue
            if not 0 <= p.partition < topic.partitions:
                parts.append(_error(p.partition, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            limit = min(p.partition_max_bytes, max(budget - total, 0))
            pd, nbytes, wait_at = await _partition(broker, topic, p, limit,
                                                   first=(total == 0),
                                                   committed=request.isolation_level == 1)
            total += nbytes
            if wait_at is not None:
                watch.append((broker.stream(topic.name, p.partition), wait_at))
            parts.append(pd)
        responses.append(FetchableTopicResponse(topic=t.topic, topic_id=t.topic_id,
                                                partitions=parts))
    resp = FetchResponse(throttle_time_ms=0, error_code=0, session_id=0, responses=responses)
    return resp, total, watch


def _error(partition, code, hw=-1, lso=-1, start=-1):
    return PartitionData(partition_index=partition, error_code=code, high_watermark=hw,
                         last_stable_offset=lso, log_start_offset=start,
                         aborted_transactions=None, preferred_read_replica=-1, records=b"")


async def _partition(broker, topic, p, limit, first, committed=False):
    """(PartitionData, bytes returned, seq to wait beyond or None). `committed`
    (read_committed): only records below the last stable offset, with the aborted
    transactions among them (broker/transactions.py)."""
    name = broker.stream(topic.name, p.partition)
    try:
        start, hw = await broker.partition_bounds(topic.name, p.partition)
    except StreamNotFound:
        return _error(p.partition, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), 0, None
    except S2Error as e:
        return _error(p.partition, kafka_error(e)), 0, None
    txns = broker.extensions["txn"]
    await txns.partition(topic.name, p.partition)
    lso = txns.last_stable(topic.name, p.partition, hw)
    offset = p.fetch_offset
    if offset < start or offset > hw:
        return _error(p.partition, ErrorCode.OFFSET_OUT_OF_RANGE, hw, lso, start), 0, None
    end = lso if committed else hw
    parts = RecordParts()
    served_end = offset
    if offset < end and (limit > 0 or first):
        try:
            batch = await broker.store.read(broker.basin, name, seq_num=offset,
                                            count=100_000, max_bytes=max(limit, 1),
                                            views=True)
        except ReadPastTail:
            batch = None
        except S2Error as e:
            return _error(p.partition, kafka_error(e), hw, hw, start), 0, None
        size = 0
        for rec in batch.records if batch else ():
            if rec.seq_num >= end:
                break  # (read_committed: past the last stable offset)
            if rec.is_command():
                continue  # s2 command records (e.g. a DeleteRecords trim) are not batches
            body = rec.body
            if size and size + len(body) > limit:
                break
            parts.add(_PREFIX.pack(rec.seq_num, len(body) - 12, 0))
            parts.add(memoryview(body)[16:])
            size += len(body)
            served_end = rec.end_seq
            if size >= limit:
                break
    aborted = None
    if committed:
        aborted = [AbortedTransaction(producer_id=pid, first_offset=first_offset)
                   for pid, first_offset in txns.aborted_between(topic.name, p.partition,
                                                                offset, served_end)]
    pd = PartitionData(partition_index=p.partition, error_code=0, high_watermark=hw,
                       last_stable_offset=lso, log_start_offset=start,
                       aborted_transactions=aborted, preferred_read_replica=-1,
                       records=parts if parts else b"")
    n = len(parts)
    return pd, n, (hw if n == 0 else None)
