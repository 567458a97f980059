"""IncrementalAlterConfigs operations and the checks every alter makes first (pure parts)."""
from types import SimpleNamespace as NS

import pytest

from broker.protocol.errors import ErrorCode
from broker.services._configs import precheck
from broker.services.incremental_alter_configs import APPEND, DELETE, SET, SUBTRACT, apply_ops
from broker.topics import TopicError


def op(name, value, operation):
    return NS(name=name, value=value, config_operation=operation)


def test_set_delete_append_subtract():
    configs = {"retention.ms": "5"}
    new = apply_ops(configs, [op("retention.ms", None, DELETE),
                              op("max.message.bytes", "100", SET),
                              op("cleanup.policy", "compact,compact", APPEND)])
    assert new == {"max.message.bytes": "100", "cleanup.policy": "delete,compact"}
    assert configs == {"retention.ms": "5"}  # not modified in place
    assert apply_ops(new, [op("cleanup.policy", "delete", SUBTRACT)])["cleanup.policy"] == \
        "compact"
    assert apply_ops({}, [op("leader.replication.throttled.replicas", "0:0", APPEND)]) == \
        {"leader.replication.throttled.replicas": "0:0"}


@pytest.mark.parametrize("bad", [op("retention.ms", "1", APPEND),
                                 op("max.message.bytes", "1", SUBTRACT),
                                 op("no.such.config", "1", SET)])
def test_bad_operations_are_invalid_config(bad):
    with pytest.raises(TopicError) as e:
        apply_ops({}, [bad])
    assert e.value.code == ErrorCode.INVALID_CONFIG


def test_precheck_duplicates_and_nulls():
    def res(kind, name, *configs):
        return NS(resource_type=kind, resource_name=name, configs=list(configs))

    resources = [res(2, "a", op("x", "1", SET)), res(2, "a", op("y", "1", SET)),
                 res(2, "b", op("x", "1", SET), op("x", "2", SET)),
                 res(2, "c", op("x", None, SET)), res(2, "d", op("x", None, DELETE)),
                 res(4, "0")]
    errors = precheck(resources, null_ok=lambda c: c.config_operation == DELETE)
    assert {i: (e.code, e.message) for i, e in errors.items()} == {
        0: (ErrorCode.INVALID_REQUEST, "Each resource must appear at most once."),
        1: (ErrorCode.INVALID_REQUEST, "Each resource must appear at most once."),
        2: (ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys"),
        3: (ErrorCode.INVALID_REQUEST, "Null value not supported for : x")}
    assert 0 in precheck(resources[3:4]) and 4 not in precheck(resources, lambda c: True)
