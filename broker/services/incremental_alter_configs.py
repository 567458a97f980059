"""IncrementalAlterConfigs: SET / DELETE / APPEND / SUBTRACT on topic configs (APPEND and
SUBTRACT only on list-type configs); broker configs are read-only."""
from __future__ import annotations

from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.incremental_alter_configs_response import (
    AlterConfigsResourceResponse,
    IncrementalAlterConfigsResponse,
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
from broker.topic_configs import TOPIC_CONFIGS
from broker.topics import TopicError

API_KEY = 44
VERSIONS = (0, 1)
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


async def handle(broker, conn, header, request):
    errors = precheck(request.resources, null_ok=lambda c: c.config_operation == DELETE)
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
    return IncrementalAlterConfigsResponse(throttle_time_ms=0, responses=out)


async def _alter(broker, r, validate_only: bool) -> None:
    for c in r.configs:
        if c.config_operation not in (SET, DELETE, APPEND, SUBTRACT):
            raise TopicError(ErrorCode.INVALID_REQUEST,
                             f"Unknown operations type {c.config_operation}")
    if r.resource_type == BROKER:
        reject_broker_change(broker, r)
        return
    if r.resource_type != TOPIC:
        raise unknown_type(r)
    topic = existing_topic(broker, r.resource_name, alter=True)
    await broker.topics.set_configs(topic.name, apply_ops(topic.configs, r.configs),
                                    validate_only=validate_only)


def apply_ops(configs: dict[str, str], ops) -> dict[str, str]:
    """The topic's config set after the operations (validated later, as a whole)."""
    new = dict(configs)
    for c in ops:
        key = TOPIC_CONFIGS.get(c.name)
        if key is None:
            raise TopicError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {c.name}")
        if c.config_operation == SET:
            new[c.name] = c.value
        elif c.config_operation == DELETE:
            new.pop(c.name, None)
        else:
            op = "APPEND" if c.config_operation == APPEND else "SUBTRACT"
            if key.type != "list":
                raise TopicError(ErrorCode.INVALID_CONFIG, f"Can't {op} to key {c.name} "
                                 "because its type is not LIST.")
            items = [x for x in new.get(c.name, key.default).split(",") if x]
            given = [x.strip() for x in c.value.split(",") if x.strip()]
            if op == "APPEND":
                for x in given:
                    if x not in items:
                        items.append(x)
            else:
                items = [x for x in items if x not in given]
            new[c.name] = ",".join(items)
    return new
