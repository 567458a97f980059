"""AlterConfigs (legacy): replace a topic's whole config set; broker configs are read-only."""
from __future__ import annotations

from broker import acls
from broker.protocol.messages.alter_configs_response import (
    AlterConfigsResourceResponse,
    AlterConfigsResponse,
)
from broker.services._configs import (
    BROKER,
    TOPIC,
    authorize,
    existing_topic,
    precheck,
    reject_broker_change,
    unknown_type,
)
from broker.topics import TopicError

API_KEY = 33
VERSIONS = (0, 2)


async def handle(broker, conn, header, request):
    errors = precheck(request.resources)
    out = []
    for i, r in enumerate(request.resources):
        try:
            if i in errors:
                raise errors[i]
            authorize(broker, conn, r, acls.ALTER_CONFIGS)
            await _alter(broker, r, request.validate_only)
        except TopicError as e:
            out.append(AlterConfigsResourceResponse(
                error_code=e.code, error_message=e.message, resource_type=r.resource_type,
                resource_name=r.resource_name))
            continue
        out.append(AlterConfigsResourceResponse(error_code=0, error_message=None,
                                                resource_type=r.resource_type,
                                                resource_name=r.resource_name))
    return AlterConfigsResponse(throttle_time_ms=0, responses=out)


async def _alter(broker, r, validate_only: bool) -> None:
    if r.resource_type == BROKER:
        reject_broker_change(broker, r)
        return
    if r.resource_type != TOPIC:
        raise unknown_type(r)
    topic = existing_topic(broker, r.resource_name, alter=True)
    await broker.topics.set_configs(topic.name, {c.name: c.value for c in r.configs},
                                    validate_only=validate_only)
