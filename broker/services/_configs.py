"""What DescribeConfigs, AlterConfigs and IncrementalAlterConfigs share: config resources
(topic and broker), config sources, and the checks Kafka makes before any change."""
from __future__ import annotations

from broker.protocol.errors import ErrorCode
from broker.topic_configs import BROKER_CONFIGS
from broker.topics import TopicError, check_topic_name

TOPIC, BROKER = 2, 4  # ConfigResource.Type ids
DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5  # ConfigSource ids


def broker_values(broker) -> dict[str, tuple[str, int]]:
    """Every reported broker config: name -> (value, source). Those the broker derives from
    its own configuration are static broker configs; the rest are Kafka's defaults."""
    cfg = broker.config
    static = {
        "advertised.listeners": f"PLAINTEXT://{cfg.advertised_host}:{cfg.advertised_port}",
        "auto.create.topics.enable": "true" if cfg.auto_create_topics else "false",
        "broker.id": str(cfg.node_id),
        "node.id": str(cfg.node_id),
        "num.partitions": str(cfg.auto_create_partitions),
        "offsets.topic.replication.factor": "1",
        "socket.request.max.bytes": str(cfg.max_frame_bytes),
        "transaction.state.log.replication.factor": "1",
    }
    assert set(static) <= set(BROKER_CONFIGS), set(static) - set(BROKER_CONFIGS)
    return {name: (static[name], STATIC_BROKER_CONFIG) if name in static
            else (key.default, DEFAULT_CONFIG)
            for name, key in sorted(BROKER_CONFIGS.items())}


def check_broker_name(broker, name: str | None) -> bool:
    """True for this broker's own resource, False for the cluster-wide default ("")."""
    if not name:
        return False
    try:
        node = int(name)
    except ValueError:
        raise TopicError(ErrorCode.INVALID_REQUEST,
                         f"Broker id must be an integer, but it is: {name}") from None
    if node != broker.config.node_id:
        raise TopicError(ErrorCode.INVALID_REQUEST,
                         f"Unexpected broker id, expected {broker.config.node_id} or empty "
                         f"string, but received {name}")
    return True


def existing_topic(broker, name: str | None, *, alter: bool):
    """The topic a topic resource names, or the error Kafka gives for it."""
    if alter and not name:
        raise TopicError(ErrorCode.INVALID_REQUEST, "Default topic resources are not allowed.")
    check_topic_name(name)
    topic = broker.topics.get(name)
    if topic is None:
        raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                         f"The topic '{name}' does not exist.")
    return topic


def precheck(resources, null_ok=lambda c: False) -> dict[int, TopicError]:
    """Kafka's checks before any alter: index of a resource -> its error."""
    errors: dict[int, TopicError] = {}
    seen: dict[tuple[int, str], int] = {}
    for i, r in enumerate(resources):
        key = (r.resource_type, r.resource_name)
        if key in seen:
            for j in (seen[key], i):
                errors[j] = TopicError(ErrorCode.INVALID_REQUEST,
                                       "Each resource must appear at most once.")
        seen[key] = i
    for i, r in enumerate(resources):
        if i in errors:
            continue
        names = [c.name for c in r.configs]
        if len(set(names)) != len(names):
            errors[i] = TopicError(ErrorCode.INVALID_REQUEST,
                                   "Error due to duplicate config keys")
            continue
        nulls = [c.name for c in r.configs if c.value is None and not null_ok(c)]
        if nulls:
            errors[i] = TopicError(ErrorCode.INVALID_REQUEST,
                                   "Null value not supported for : " + ", ".join(nulls))
    return errors


def reject_broker_change(broker, resource) -> None:
    """Broker configs are read-only: Kafka's answer to a non-dynamic broker config."""
    check_broker_name(broker, resource.resource_name)
    names = [c.name for c in resource.configs]
    if names:
        raise TopicError(ErrorCode.INVALID_REQUEST,
                         f"Cannot update these configs dynamically: Set({', '.join(names)})")


def unknown_type(resource) -> TopicError:
    return TopicError(ErrorCode.INVALID_REQUEST,
                      f"Unknown resource type {resource.resource_type}")


def authorize(broker, conn, r, operation: int) -> None:
    """TopicError unless the connection may run `operation` (DESCRIBE_CONFIGS or
    ALTER_CONFIGS) on the resource: the topic, or the cluster for a broker (acls.py)."""
    from broker import acls
    if r.resource_type == TOPIC:
        if not broker.allowed(conn, operation, acls.TOPIC, r.resource_name):
            raise TopicError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.")
    elif r.resource_type == BROKER and not broker.allowed(conn, operation):
        raise TopicError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Authorization failed.")
