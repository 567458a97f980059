"""Admin tools' ACL calls get Kafka's answer of a broker without an authorizer
(SECURITY_DISABLED): confluent-kafka's AdminClient and kafka-python's KafkaAdminClient.
(DescribeProducers and ListTransactions, which neither client calls, are checked through
the codec in tests/broker/test_admin_producers_transactions.py.)"""
from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePatternFilter,
)
from kafka.admin import ResourceType as KResourceType
from kafka.errors import SecurityDisabledError


def test_acl_requests_are_answered_security_disabled(broker, topic_name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    # (librdkafka drops DescribeAcls' top-level error: no ACLs, as against Kafka)
    assert admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(20) == []
    binding = AclBinding(ResourceType.TOPIC, topic_name, ResourcePatternType.LITERAL,
                         "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW)
    [fut] = admin.create_acls([binding]).values()
    with pytest.raises(KafkaException) as e:
        fut.result(20)
    assert e.value.args[0].code() == KafkaError.SECURITY_DISABLED

    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    with pytest.raises(SecurityDisabledError, match="No Authorizer is configured"):
        kadmin.describe_acls(ACLFilter(
            principal=None, host="*", operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(KResourceType.ANY, None,
                                                   ACLResourcePatternType.ANY)))
    kadmin.close()
