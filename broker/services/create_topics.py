"""CreateTopics: validation (names, partitions, replication, configs), validate_only."""
from __future__ import annotations

from broker.acls import CREATE, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.create_topics_response import (
    CreatableTopicConfigs,
    CreatableTopicResult,
    CreateTopicsResponse,
)
from broker.topic_configs import TOPIC_CONFIGS
from broker.topics import TopicError

API_KEY = 19
VERSIONS = (2, 7)
SOURCE_DYNAMIC_TOPIC, SOURCE_DEFAULT = 1, 5


MAX_PARTITIONS_PER_REQUEST = 10_000  # as Kafka's controller
STRICT_QUOTA_FROM = 6  # THROTTLING_QUOTA_EXCEEDED per topic (KIP-599)


async def handle(broker, conn, header, request):
    names = [t.name for t in request.topics]
    total = sum(max(t.num_partitions, len(t.assignments or ()), 1) for t in request.topics)
    results = []
    throttle = 0  # controller_mutation_rate (broker/quotas.py)
    for t in request.topics:
        if total > MAX_PARTITIONS_PER_REQUEST:
            results.append(CreatableTopicResult(
                name=t.name, error_code=ErrorCode.POLICY_VIOLATION,
                error_message=f"Excessively large number of partitions per request: {total} "
                              f"(at most {MAX_PARTITIONS_PER_REQUEST})",
                topic_config_error_code=0, num_partitions=-1, replication_factor=-1,
                configs=None))
            continue
        if not (broker.allowed(conn, CREATE) or broker.allowed(conn, CREATE, TOPIC, t.name)):
            results.append(CreatableTopicResult(
                name=t.name, error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                error_message="Authorization failed.", topic_config_error_code=0,
                num_partitions=-1, replication_factor=-1, configs=None))
            continue
        if not request.validate_only and header.request_api_version >= STRICT_QUOTA_FROM \
                and (wait := broker.quotas.mutation_refused(conn)):
            throttle = max(throttle, wait)
            results.append(CreatableTopicResult(
                name=t.name, error_code=ErrorCode.THROTTLING_QUOTA_EXCEEDED,
                error_message="The throttling quota has been exceeded.",
                topic_config_error_code=0, num_partitions=-1, replication_factor=-1,
                configs=None))
            continue
        result = await _create(broker, t, names.count(t.name) > 1, request.validate_only)
        if not request.validate_only and result.error_code == 0:
            throttle = max(throttle, broker.quotas.record_mutation(conn, result.num_partitions))
        results.append(result)
    return CreateTopicsResponse(throttle_time_ms=throttle, topics=results)


async def _create(broker, t, duplicated: bool, validate_only: bool) -> CreatableTopicResult:
    def fail(code, message):
        return CreatableTopicResult(name=t.name, error_code=code, error_message=message,
                                    topic_config_error_code=0, num_partitions=-1,
                                    replication_factor=-1, configs=None)

    if duplicated:
        return fail(ErrorCode.INVALID_REQUEST, "Duplicate topic name in the request.")
    partitions = t.num_partitions
    cluster = broker.cluster
    live = {n.node_id: n for n in cluster.live_nodes()}
    channels = None
    if t.assignments:
        if partitions != -1 or t.replication_factor != -1:
            return fail(ErrorCode.INVALID_REQUEST, "Both numPartitions or replicationFactor "
                        "and replicasAssignments were set.")
        channels = []
        for a in t.assignments:
            ids = list(a.broker_ids)
            if not cluster.enabled and ids != [broker.config.node_id]:
                return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                            f"Replica assignment {ids} is not this broker.")
            if not ids or len(set(ids)) != len(ids) or any(i not in live for i in ids):
                return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                            f"Replica assignment {ids} does not name distinct live brokers.")
            channels.append(live[ids[0]].channel)  # the first is the leader
        partitions = len(t.assignments)
        if not cluster.enabled:
            channels = None
    elif partitions == -1:
        partitions = broker.config.auto_create_partitions
    if t.replication_factor not in (-1, 1) and not t.assignments and \
            not 1 <= t.replication_factor <= len(live):
        return fail(ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"Replication factor {t.replication_factor} is larger than the number of "
                    f"available brokers ({len(live)}); every write is already on a storage "
                    "quorum.")
    configs: dict[str, str | None] = {}
    for c in t.configs or ():
        configs[c.name] = c.value
    replicas = None  # (partition -> its brokers: what Metadata reports, reassign.py)
    if cluster.enabled and t.assignments:
        replicas = {p: list(a.broker_ids) for p, a in enumerate(t.assignments)
                    if len(a.broker_ids) > 1}
    elif cluster.enabled and t.replication_factor > 1:
        # the leaders as `place` puts them, each followed by the next live brokers
        by_channel = {n.channel: n.node_id for n in live.values()}
        ids = sorted(live)
        channels = [cluster.place(t.name, p) for p in range(partitions)]
        replicas = {}
        for p, ch in enumerate(channels):
            first = ids.index(by_channel[ch])
            replicas[p] = [ids[(first + k) % len(ids)] for k in range(t.replication_factor)]
    try:
        topic = await broker.topics.create(t.name, partitions, configs,
                                           validate_only=validate_only, channels=channels,
                                           replicas=replicas)
    except TopicError as e:
        return fail(e.code, e.message)
    factor = len(next(iter(topic.replicas.values()))) if topic.replicas else 1
    return CreatableTopicResult(
        name=topic.name, topic_id=topic.id, error_code=0, error_message=None,
        topic_config_error_code=0, num_partitions=topic.partitions,
        replication_factor=factor,
        configs=[CreatableTopicConfigs(name=k, value=topic.config(k), read_only=False,
                                       config_source=SOURCE_DYNAMIC_TOPIC if k in topic.configs
                                       else SOURCE_DEFAULT, is_sensitive=False)
                 for k in sorted(TOPIC_CONFIGS)])
