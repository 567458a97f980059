"""CreatePartitions: grow a topic (never shrink), validate_only, manual assignments.

The new partitions are new streams `kafka/<topic>/<p>`, placed as new topics' are (on this
broker, or in a cluster on the live brokers in turn: broker/cluster.py). A manual
assignment must name live brokers (this one alone when not in a cluster); in a cluster it
is checked but not followed.
"""
from __future__ import annotations

from broker.acls import ALTER, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.create_partitions_response import (
    CreatePartitionsResponse,
    CreatePartitionsTopicResult,
)
from broker.topics import TopicError

API_KEY = 37
VERSIONS = (0, 3)
MAX_PARTITIONS_PER_REQUEST = 10_000  # Kafka's controller refuses bigger batches the same way
STRICT_QUOTA_FROM = 3  # THROTTLING_QUOTA_EXCEEDED per topic (KIP-599)


async def handle(broker, conn, header, request):
    names = [t.name for t in request.topics]
    added = 0
    for t in request.topics:
        topic = broker.topics.get(t.name)
        if topic is not None and t.count > topic.partitions:
            added += t.count - topic.partitions
    if added > MAX_PARTITIONS_PER_REQUEST:
        return CreatePartitionsResponse(throttle_time_ms=0, results=[
            _result(t.name, ErrorCode.POLICY_VIOLATION,
                    "Excessively large number of partitions per request.")
            for t in request.topics])
    results = []
    throttle = 0  # controller_mutation_rate (broker/quotas.py)
    for t in request.topics:
        if names.count(t.name) > 1:
            results.append(_result(t.name, ErrorCode.INVALID_REQUEST, "Duplicate topic name."))
            continue
        if not broker.allowed(conn, ALTER, TOPIC, t.name):
            results.append(_result(t.name, ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                                   "Authorization failed."))
            continue
        if not request.validate_only and header.request_api_version >= STRICT_QUOTA_FROM \
                and (wait := broker.quotas.mutation_refused(conn)):
            throttle = max(throttle, wait)
            results.append(_result(t.name, ErrorCode.THROTTLING_QUOTA_EXCEEDED,
                                   "The throttling quota has been exceeded."))
            continue
        try:
            await broker.topics.add_partitions(t.name, t.count, validate_only=True)
            _check_assignments(broker, t)
            if not request.validate_only:
                before = broker.topics.get(t.name).partitions
                await broker.topics.add_partitions(t.name, t.count)
                throttle = max(throttle,
                               broker.quotas.record_mutation(conn, t.count - before))
        except TopicError as e:
            results.append(_result(t.name, e.code, e.message))
            continue
        results.append(_result(t.name, ErrorCode.NONE, None))
    return CreatePartitionsResponse(throttle_time_ms=throttle, results=results)


def _result(name, code, message) -> CreatePartitionsTopicResult:
    return CreatePartitionsTopicResult(name=name, error_code=code, error_message=message)


def _check_assignments(broker, t) -> None:
    if t.assignments is None:
        return
    topic = broker.topics.get(t.name)
    assert topic is not None and t.count > topic.partitions  # checked by add_partitions
    added = t.count - topic.partitions
    if len(t.assignments) != added:
        raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                         f"Attempted to add {added} additional partition(s), but only "
                         f"{len(t.assignments)} assignment(s) were specified.")
    live = {n.node_id for n in broker.cluster.live_nodes()}
    for a in t.assignments:
        ids = list(a.broker_ids)
        if not ids:
            raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             "The manual partition assignment includes an empty replica list.")
        for b in ids:
            if b not in live:
                raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                 f"The manual partition assignment includes broker {b}, but "
                                 "no such broker is registered.")
        if len(ids) > 1 and (not broker.cluster.enabled or len(set(ids)) != len(ids)):
            raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                             f"The manual partition assignment includes the partition replica "
                             f"assignment {ids} which contains duplicate broker IDs.")
