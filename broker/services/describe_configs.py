"""DescribeConfigs: topic configs (set or default, with Kafka's broker synonyms) and this
broker's read-only configs; config sources, synonyms when asked, config types (v3+)."""
from __future__ import annotations

from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_configs_response import (
    DescribeConfigsResourceResult,
    DescribeConfigsResponse,
    DescribeConfigsResult,
    DescribeConfigsSynonym,
)
from broker.services._configs import (
    BROKER,
    DEFAULT_CONFIG,
    DYNAMIC_TOPIC_CONFIG,
    TOPIC,
    authorize,
    broker_values,
    check_broker_name,
    existing_topic,
)
from broker.topic_configs import BROKER_CONFIGS, CONFIG_TYPE_IDS, TOPIC_CONFIGS, TOPIC_SYNONYMS
from broker.topics import TopicError

API_KEY = 32
VERSIONS = (1, 4)


async def handle(broker, conn, header, request):
    results = []
    for r in request.resources:
        try:
            authorize(broker, conn, r, acls.DESCRIBE_CONFIGS)
            configs = _describe(broker, r, request.include_synonyms)
        except TopicError as e:
            results.append(DescribeConfigsResult(
                error_code=e.code, error_message=e.message, resource_type=r.resource_type,
                resource_name=r.resource_name, configs=[]))
            continue
        results.append(DescribeConfigsResult(error_code=0, error_message=None,
                                             resource_type=r.resource_type,
                                             resource_name=r.resource_name, configs=configs))
    return DescribeConfigsResponse(throttle_time_ms=0, results=results)


def _describe(broker, r, include_synonyms: bool) -> list[DescribeConfigsResourceResult]:
    wanted = set(r.configuration_keys) if r.configuration_keys else None
    if r.resource_type == TOPIC:
        try:
            topic = existing_topic(broker, r.resource_name, alter=False)
        except TopicError as e:
            if e.code != ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise
            raise TopicError(e.code, None) from None  # Kafka sends no message here
        out = []
        for name in sorted(TOPIC_CONFIGS):
            if wanted is not None and name not in wanted:
                continue
            synonyms = []
            if name in topic.configs:
                synonyms.append((name, topic.configs[name], DYNAMIC_TOPIC_CONFIG))
            if name in TOPIC_SYNONYMS:
                synonyms.append((TOPIC_SYNONYMS[name], TOPIC_CONFIGS[name].default,
                                 DEFAULT_CONFIG))
            out.append(_entry(name, topic.config(name), synonyms, TOPIC_CONFIGS[name].type,
                              read_only=False, include_synonyms=include_synonyms))
        return out
    if r.resource_type == BROKER:
        if not check_broker_name(broker, r.resource_name):
            return []  # the cluster-wide dynamic defaults: this broker has none
        out = []
        for name, (value, source) in broker_values(broker).items():
            if wanted is not None and name not in wanted:
                continue
            out.append(_entry(name, value, [(name, value, source)], BROKER_CONFIGS[name].type,
                              read_only=True, include_synonyms=include_synonyms))
        return out
    raise TopicError(ErrorCode.INVALID_REQUEST,
                     f"Unsupported resource type: {r.resource_type}")


def _entry(name, value, synonyms, type_name, *, read_only, include_synonyms):
    return DescribeConfigsResourceResult(
        name=name, value=value, read_only=read_only,
        config_source=synonyms[0][2] if synonyms else DEFAULT_CONFIG,
        is_default=not synonyms or synonyms[0][2] == DEFAULT_CONFIG, is_sensitive=False,
        synonyms=[DescribeConfigsSynonym(name=n, value=v, source=s) for n, v, s in synonyms]
        if include_synonyms else [],
        config_type=CONFIG_TYPE_IDS[type_name], documentation=None)
