"""DeleteTopics: by name (v1-v5) or by name or topic id (v6)."""
from __future__ import annotations

from broker.acls import DELETE, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.delete_topics_response import (
    DeletableTopicResult,
    DeleteTopicsResponse,
)
from broker.topics import TopicError

API_KEY = 20
VERSIONS = (1, 6)
ZERO_UUID = bytes(16)
STRICT_QUOTA_FROM = 5  # THROTTLING_QUOTA_EXCEEDED per topic (KIP-599)


async def handle(broker, conn, header, request):
    if header.request_api_version >= 6:
        wanted = [(t.name, t.topic_id) for t in request.topics]
    else:
        wanted = [(n, ZERO_UUID) for n in request.topic_names]
    results = []
    throttle = 0  # controller_mutation_rate (broker/quotas.py)
    for name, topic_id in wanted:
        if name is None:
            topic = broker.topics.by_id.get(topic_id)
            if topic is None:
                results.append(DeletableTopicResult(name=None, topic_id=topic_id,
                                                    error_code=ErrorCode.UNKNOWN_TOPIC_ID,
                                                    error_message="unknown topic id"))
                continue
            name = topic.name
        if not broker.allowed(conn, DELETE, TOPIC, name):
            results.append(DeletableTopicResult(
                name=name, topic_id=topic_id, error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                error_message="Authorization failed."))
            continue
        if header.request_api_version >= STRICT_QUOTA_FROM and \
                (wait := broker.quotas.mutation_refused(conn)):
            throttle = max(throttle, wait)
            results.append(DeletableTopicResult(
                name=name, topic_id=topic_id, error_code=ErrorCode.THROTTLING_QUOTA_EXCEEDED,
                error_message="The throttling quota has been exceeded."))
            continue
        try:
            topic = await broker.topics.delete(name)
        except TopicError as e:
            results.append(DeletableTopicResult(name=name, topic_id=topic_id,
                                                error_code=e.code, error_message=e.message))
            continue
        broker.producers.forget_topic(name)
        broker.extensions["txn"].forget_topic(name)
        throttle = max(throttle, broker.quotas.record_mutation(conn, topic.partitions))
        results.append(DeletableTopicResult(name=name, topic_id=topic.id, error_code=0))
    return DeleteTopicsResponse(throttle_time_ms=throttle, responses=results)
