"""DescribeTopicPartitions (KIP-966): topics and their partitions, paged by a cursor and a
partition limit, as Kafka's admin client asks since 3.8 (`kafka-topics.sh --describe`).
Leaders and replicas as Metadata reports them; no eligible leader replicas (every broker
of a cluster can lead any partition: storage is shared)."""
from broker.acls import DESCRIBE, TOPIC
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages.describe_topic_partitions_response import (
    Cursor,
    DescribeTopicPartitionsResponse,
    DescribeTopicPartitionsResponsePartition,
    DescribeTopicPartitionsResponseTopic,
)
from broker.services._common import NO_AUTH_OPS
from broker.services.metadata import ZERO_UUID, partitions_of

API_KEY = 75
VERSIONS = (0, 0)


def _missing(name: str, code: int) -> DescribeTopicPartitionsResponseTopic:
    return DescribeTopicPartitionsResponseTopic(
        error_code=code, name=name, topic_id=ZERO_UUID, is_internal=False, partitions=[],
        topic_authorized_operations=NO_AUTH_OPS)


async def handle(broker, conn, header, request):
    if request.topics:
        names = sorted({t.name for t in request.topics})
    else:  # every topic this principal may describe
        names = sorted(n for n in broker.topics.topics if broker.allowed(conn, DESCRIBE, TOPIC, n))
    cursor = request.cursor
    first = 0
    if cursor is not None:
        if cursor.topic_name not in names or cursor.partition_index < 0:
            return DescribeTopicPartitionsResponse(throttle_time_ms=0, topics=[_missing(
                cursor.topic_name, E.INVALID_REQUEST)], next_cursor=None)
        names = names[names.index(cursor.topic_name):]
        first = cursor.partition_index
    left = max(1, request.response_partition_limit)
    out, next_cursor = [], None
    for i, name in enumerate(names):
        start, first = first, 0
        if not broker.allowed(conn, DESCRIBE, TOPIC, name):
            out.append(_missing(name, E.TOPIC_AUTHORIZATION_FAILED))
            continue
        topic = broker.topics.get(name)
        if topic is None:
            out.append(_missing(name, E.UNKNOWN_TOPIC_OR_PARTITION))
            continue
        if left == 0:
            next_cursor = Cursor(topic_name=name, partition_index=start)
            break
        parts = (await partitions_of(broker, topic))[start:]
        if len(parts) > left:
            next_cursor = Cursor(topic_name=name, partition_index=start + left)
            parts = parts[:left]
        left -= len(parts)
        out.append(DescribeTopicPartitionsResponseTopic(
            error_code=0, name=name, topic_id=topic.id, is_internal=False,
            partitions=[DescribeTopicPartitionsResponsePartition(
                error_code=p.error_code, partition_index=p.partition_index,
                leader_id=p.leader_id, leader_epoch=p.leader_epoch,
                replica_nodes=p.replica_nodes, isr_nodes=p.isr_nodes,
                eligible_leader_replicas=None, last_known_elr=None,
                offline_replicas=p.offline_replicas) for p in parts],
            topic_authorized_operations=broker.authorized_ops(conn, TOPIC, name)))
        if next_cursor is not None:
            break
    return DescribeTopicPartitionsResponse(throttle_time_ms=0, topics=out,
                                           next_cursor=next_cursor)
