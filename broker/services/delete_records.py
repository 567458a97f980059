"""DeleteRecords: move a partition's log start offset forward with an s2core `trim` record.

The trim command record is appended to the partition stream with span 0, so it takes no
offset and the high watermark stays put (Fetch skips command records). The low watermark
reported is the stream's first readable seq_num once the trim is durable.
"""
from __future__ import annotations

from broker.acls import DELETE, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.delete_records_response import (
    DeleteRecordsPartitionResult,
    DeleteRecordsResponse,
    DeleteRecordsTopicResult,
)
from broker.services._common import kafka_error
from s2core.errors import S2Error
from s2core.records import trim_record

API_KEY = 21
VERSIONS = (0, 2)
HIGH_WATERMARK = -1


async def handle(broker, conn, header, request):
    topics = []
    for t in request.topics:
        topic = broker.topics.get(t.name)
        denied = not broker.allowed(conn, DELETE, TOPIC, t.name)
        parts = []
        for p in t.partitions:
            if denied:
                parts.append(_result(p.partition_index, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            if topic is None or not 0 <= p.partition_index < topic.partitions:
                parts.append(_result(p.partition_index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            if "delete" not in topic.config("cleanup.policy").split(","):
                # Kafka: "Records of partition ... can not be deleted due to the configured
                # policy" (compact-only topics)
                parts.append(_result(p.partition_index, ErrorCode.POLICY_VIOLATION))
                continue
            try:
                code, low = await _trim(broker, topic.name, p.partition_index, p.offset)
            except S2Error as e:
                code, low = kafka_error(e), -1
            parts.append(_result(p.partition_index, code, low))
        topics.append(DeleteRecordsTopicResult(name=t.name, partitions=parts))
    return DeleteRecordsResponse(throttle_time_ms=0, topics=topics)


def _result(index, code, low=-1) -> DeleteRecordsPartitionResult:
    return DeleteRecordsPartitionResult(partition_index=index, low_watermark=low,
                                        error_code=code)


async def _trim(broker, topic: str, partition: int, offset: int) -> tuple[int, int]:
    """(error code, low watermark) after deleting the records before `offset`."""
    start, hw = await broker.partition_bounds(topic, partition)
    target = hw if offset == HIGH_WATERMARK else offset
    if target < 0 or target > hw:
        return ErrorCode.OFFSET_OUT_OF_RANGE, -1
    name = broker.stream(topic, partition)
    if target > start:
        trim = trim_record(target)
        trim.span = 0  # takes no offset: the high watermark stays where it is, as in Kafka
        await broker.store.append(broker.basin, name, [trim])
    low = await broker.store.first_seq(broker.basin, name)
    assert low >= target, (low, target)
    return ErrorCode.NONE, low
