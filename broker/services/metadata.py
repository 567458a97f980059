"""Metadata: this broker is every partition's leader and the controller; auto-creation."""
from __future__ import annotations

from broker.acls import CLUSTER, CREATE, DESCRIBE, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.metadata_response import (
    MetadataResponse,
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)
from broker.services._common import NO_AUTH_OPS
from broker.topics import TopicError, check_topic_name

API_KEY = 3
VERSIONS = (0, 13)
ZERO_UUID = bytes(16)


def partitions_of(broker, topic) -> list[MetadataResponsePartition]:
    node = broker.config.node_id
    return [MetadataResponsePartition(error_code=0, partition_index=p, leader_id=node,
                                      leader_epoch=0, replica_nodes=[node], isr_nodes=[node],
                                      offline_replicas=[])
            for p in range(topic.partitions)]


def topic_entry(broker, topic, ops: int = NO_AUTH_OPS) -> MetadataResponseTopic:
    return MetadataResponseTopic(error_code=0, name=topic.name, topic_id=topic.id,
                                 is_internal=False, partitions=partitions_of(broker, topic),
                                 topic_authorized_operations=ops)


async def handle(broker, conn, header, request):
    version = header.request_api_version
    cfg = broker.config
    topics = []

    def ops(t) -> int:  # (only when asked: v8+)
        return broker.authorized_ops(conn, TOPIC, t.name) \
            if version >= 8 and request.include_topic_authorized_operations else NO_AUTH_OPS
    if request.topics is None or (version == 0 and not request.topics):
        topics = [topic_entry(broker, t, ops(t))
                  for _, t in sorted(broker.topics.topics.items())
                  if broker.allowed(conn, DESCRIBE, TOPIC, t.name)]
    else:
        allow = request.allow_auto_topic_creation if version >= 4 else True
        for req in request.topics:
            name = req.name
            if name is None and req.topic_id and req.topic_id != ZERO_UUID:
                t = broker.topics.by_id.get(req.topic_id)
                if t is None:
                    topics.append(MetadataResponseTopic(
                        error_code=ErrorCode.UNKNOWN_TOPIC_ID, name=None,
                        topic_id=req.topic_id, partitions=[],
                        topic_authorized_operations=NO_AUTH_OPS))
                elif not broker.allowed(conn, DESCRIBE, TOPIC, t.name):
                    topics.append(MetadataResponseTopic(
                        error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED, name=None,
                        topic_id=req.topic_id, partitions=[],
                        topic_authorized_operations=NO_AUTH_OPS))
                else:
                    topics.append(topic_entry(broker, t, ops(t)))
                continue
            if not broker.allowed(conn, DESCRIBE, TOPIC, name):
                topics.append(MetadataResponseTopic(
                    error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED, name=name,
                    topic_id=ZERO_UUID, partitions=[], topic_authorized_operations=NO_AUTH_OPS))
                continue
            # auto-creation needs CREATE on the cluster or on the topic (Kafka's rule)
            create = allow and cfg.auto_create_topics and (
                broker.allowed(conn, CREATE) or broker.allowed(conn, CREATE, TOPIC, name))
            entry = await _named(broker, name, create)
            if entry.error_code == 0:
                entry.topic_authorized_operations = ops(entry)
            topics.append(entry)
    node = MetadataResponseBroker(node_id=cfg.node_id, host=cfg.advertised_host,
                                  port=cfg.advertised_port, rack=None)
    return MetadataResponse(throttle_time_ms=0, brokers=[node], cluster_id=broker.cluster_id,
                            controller_id=cfg.node_id, topics=topics,
                            cluster_authorized_operations=broker.authorized_ops(conn, CLUSTER)
                            if 8 <= version <= 10 and request.include_cluster_authorized_operations
                            else NO_AUTH_OPS, error_code=0)


async def _named(broker, name, auto_create: bool) -> MetadataResponseTopic:
    def error(code):
        return MetadataResponseTopic(error_code=code, name=name, topic_id=ZERO_UUID,
                                     partitions=[], topic_authorized_operations=NO_AUTH_OPS)

    try:
        check_topic_name(name)
    except TopicError as e:
        return error(e.code)
    t = broker.topics.get(name)
    if t is None and auto_create:
        try:
            t = await broker.topics.create(name, broker.config.auto_create_partitions, {})
        except TopicError as e:
            if e.code != ErrorCode.TOPIC_ALREADY_EXISTS:
                return error(e.code)
            t = broker.topics.get(name)
    if t is None:
        return error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    return topic_entry(broker, t)
