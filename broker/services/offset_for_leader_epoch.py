"""OffsetForLeaderEpoch: every partition has had one leader epoch, 0, since creation, so
epoch 0 ends at the high watermark and any other epoch is undefined."""
from __future__ import annotations

from broker.acls import DESCRIBE, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.offset_for_leader_epoch_response import (
    EpochEndOffset,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderTopicResult,
)
from broker.services._common import kafka_error
from s2core.errors import S2Error

API_KEY = 23
VERSIONS = (2, 4)
LEADER_EPOCH = 0
NO_EPOCH = -1


async def handle(broker, conn, header, request):
    topics = []
    for t in request.topics:
        topic = broker.topics.get(t.topic)
        denied = not broker.allowed(conn, DESCRIBE, TOPIC, t.topic)
        parts = []
        for p in t.partitions:
            if denied:
                parts.append(_result(p.partition, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
            elif topic is None or not 0 <= p.partition < topic.partitions:
                parts.append(_result(p.partition, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
            elif p.current_leader_epoch not in (NO_EPOCH, LEADER_EPOCH):
                code = ErrorCode.FENCED_LEADER_EPOCH if p.current_leader_epoch < LEADER_EPOCH \
                    else ErrorCode.UNKNOWN_LEADER_EPOCH
                parts.append(_result(p.partition, code))
            elif p.leader_epoch != LEADER_EPOCH:
                parts.append(_result(p.partition, ErrorCode.NONE))  # undefined epoch
            else:
                try:
                    _, hw = await broker.partition_bounds(topic.name, p.partition)
                except S2Error as e:
                    parts.append(_result(p.partition, kafka_error(e)))
                    continue
                parts.append(_result(p.partition, ErrorCode.NONE, LEADER_EPOCH, hw))
        topics.append(OffsetForLeaderTopicResult(topic=t.topic, partitions=parts))
    return OffsetForLeaderEpochResponse(throttle_time_ms=0, topics=topics)


def _result(partition, code, epoch=NO_EPOCH, end=-1) -> EpochEndOffset:
    return EpochEndOffset(error_code=code, partition=partition, leader_epoch=epoch,
                          end_offset=end)
