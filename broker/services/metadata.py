"""Metadata: the live brokers, each partition's leader (this broker for all of them, unless
in a cluster: broker/cluster.py) and the controller; auto-creation."""
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
from broker.topics import TopicError, check_topic_name, stream_name
from s2core.errors import S2Error

API_KEY = 3
VERSIONS = (0, 13)
ZERO_UUID = bytes(16)


async def partitions_of(broker, topic) -> list[MetadataResponsePartition]:
    cluster = broker.cluster
    live = {n.node_id for n in cluster.live_nodes()} if topic.replicas else set()
    out = []
    for p in range(topic.partitions):
        node = cluster.node_id
        if cluster.enabled:
            try:
                node = await cluster.stream_leader(stream_name(topic.name, p))
            except S2Error:  # (its stream is not there yet: auto-created on produce)
                node = None
        if node is None:  # its broker is gone and no other has taken over yet
            out.append(MetadataResponsePartition(
                error_code=ErrorCode.LEADER_NOT_AVAILABLE, partition_index=p, leader_id=-1,
                leader_epoch=-1, replica_nodes=[], isr_nodes=[], offline_replicas=[]))
            continue
        replicas = topic.replicas.get(p)  # (as asked at creation or by a reassignment)
        if not replicas:
            replicas = [node]
        elif node not in replicas:  # (another broker took the leader's log over)
            replicas = [node] + replicas[1:]
        out.append(MetadataResponsePartition(
            error_code=0, partition_index=p, leader_id=node, leader_epoch=0,
            replica_nodes=replicas,
            isr_nodes=[r for r in replicas if r in live or r == node],
            offline_replicas=[r for r in replicas if r not in live and r != node]))
    return out


async def topic_entry(broker, topic, ops: int = NO_AUTH_OPS) -> MetadataResponseTopic:
    return MetadataResponseTopic(error_code=0, name=topic.name, topic_id=topic.id,
                                 is_internal=False,
                                 partitions=await partitions_of(broker, topic),
                                 topic_authorized_operations=ops)


async def handle(broker, conn, header, request):
    version = header.request_api_version
    cfg = broker.config
    topics = []

    def ops(t) -> int:  # (only when asked: v8+)
        return broker.authorized_ops(conn, TOPIC, t.name) \
            if version >= 8 and request.include_topic_authorized_operations else NO_AUTH_OPS
    if request.topics is None or (version == 0 and not request.topics):
        topics = [await topic_entry(broker, t, ops(t))
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
                    topics.append(await topic_entry(broker, t, ops(t)))
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
    nodes = [MetadataResponseBroker(node_id=n.node_id, host=n.host, port=n.port, rack=n.rack)
             for n in broker.cluster.live_nodes()]
    return MetadataResponse(throttle_time_ms=0, brokers=nodes, cluster_id=broker.cluster_id,
                            controller_id=broker.cluster.controller(), topics=topics,
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
    return await topic_entry(broker, t)
