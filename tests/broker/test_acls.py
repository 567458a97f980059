"""Kafka ACLs (broker/acls.py): how a binding applies (literal, wildcard and prefixed
names, principals, hosts, DENY over ALLOW, implied operations, super users, resources no
binding names), the filters of Describe/DeleteAcls, bindings kept across a restart, and
the Kafka APIs refusing what a principal may not do, through the codec."""
from __future__ import annotations

import pytest

from broker import acls as A
from broker.acls import Authorizer, Binding, Filter, binding_error
from broker.protocol import decode_request, encode_request
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages import _index
from broker.protocol.messages.create_acls_request import AclCreation, CreateAclsRequest
from broker.protocol.messages.delete_acls_request import DeleteAclsFilter, DeleteAclsRequest
from broker.protocol.messages.describe_acls_request import DescribeAclsRequest
from broker.protocol.messages.list_offsets_request import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from broker.protocol.messages.metadata_request import MetadataRequest, MetadataRequestTopic
from broker.services import create_acls, delete_acls, describe_acls, list_offsets, metadata
from s2core.metadata.memory import MemoryMetadataStore


def allow(rtype, name, principal, op, pattern=A.LITERAL, host="*"):
    return Binding(rtype, name, pattern, principal, host, op, A.ALLOW)


def deny(rtype, name, principal, op, pattern=A.LITERAL, host="*"):
    return Binding(rtype, name, pattern, principal, host, op, A.DENY)


async def authorizer(*bindings, **kw) -> Authorizer:
    a = Authorizer(MemoryMetadataStore(), enabled=True, **kw)
    await a.create(list(bindings))
    return a


async def test_how_bindings_apply():
    a = await authorizer(
        allow(A.TOPIC, "orders", "User:alice", A.READ),
        allow(A.TOPIC, "logs-", "User:alice", A.WRITE, A.PREFIXED),
        allow(A.TOPIC, "*", "User:*", A.DESCRIBE),
        deny(A.TOPIC, "logs-secret", "User:alice", A.ALL),
        allow(A.TOPIC, "local", "User:bob", A.ALL, host="10.0.0.1"),
        allow(A.GROUP, "g", "User:alice", A.ALTER_CONFIGS),
        super_users=["User:admin"])
    ok = a.authorize
    assert ok("User:alice", "h", A.READ, A.TOPIC, "orders")
    assert ok("User:alice", "h", A.DESCRIBE, A.TOPIC, "orders"), "READ implies DESCRIBE"
    assert not ok("User:alice", "h", A.WRITE, A.TOPIC, "orders")
    assert ok("User:alice", "h", A.WRITE, A.TOPIC, "logs-app")
    assert not ok("User:alice", "h", A.WRITE, A.TOPIC, "logs-secret"), "DENY wins"
    assert not ok("User:alice", "h", A.DESCRIBE, A.TOPIC, "logs-secret")
    assert ok("User:carol", "h", A.DESCRIBE, A.TOPIC, "anything"), "wildcard name, User:*"
    assert not ok("User:carol", "h", A.READ, A.TOPIC, "anything")
    assert ok("User:bob", "10.0.0.1", A.WRITE, A.TOPIC, "local")
    assert not ok("User:bob", "10.0.0.2", A.WRITE, A.TOPIC, "local"), "host"
    assert ok("User:alice", "h", A.DESCRIBE_CONFIGS, A.GROUP, "g"), "ALTER_CONFIGS implies"
    assert not ok("User:alice", "h", A.READ, A.GROUP, "other"), "no binding: denied"
    assert ok("User:admin", "h", A.DELETE, A.CLUSTER, A.CLUSTER_NAME), "super user"
    lenient = await authorizer(allow(A.TOPIC, "t", "User:alice", A.READ),
                               allow_if_no_acl=True)
    assert lenient.authorize("User:x", "h", A.READ, A.GROUP, "g"), "no binding names it"
    assert not lenient.authorize("User:x", "h", A.READ, A.TOPIC, "t")
    assert a.authorize_any("User:alice", "h", A.WRITE, A.TOPIC)
    assert not a.authorize_any("User:carol", "h", A.WRITE, A.TOPIC)


async def test_filters_validation_and_restart():
    md = MemoryMetadataStore()
    a = Authorizer(md, enabled=True)
    b1 = allow(A.TOPIC, "orders", "User:alice", A.READ)
    b2 = allow(A.TOPIC, "ord", "User:bob", A.WRITE, A.PREFIXED)
    b3 = allow(A.GROUP, "g", "User:alice", A.READ)
    await a.create([b1, b2, b3, b1])
    assert len(a.bindings) == 3, "a binding created twice is one"
    everything = Filter(A.ANY, None, A.ANY, None, None, A.ANY, A.ANY)
    assert set(a.describe(everything)) == {b1, b2, b3}
    match = Filter(A.TOPIC, "orders", A.MATCH, None, None, A.ANY, A.ANY)
    assert set(a.describe(match)) == {b1, b2}, "MATCH: what applies to the name"
    assert a.describe(Filter(A.TOPIC, "ord", A.LITERAL, None, None, A.ANY, A.ANY)) == []
    assert a.describe(Filter(A.ANY, None, A.ANY, "User:alice", None, A.READ, A.ALLOW)) \
        in ([b1, b3], [b3, b1])
    again = Authorizer(md, enabled=True)
    await again.load()
    assert set(again.bindings.values()) == {b1, b2, b3}
    assert await again.delete(Filter(A.GROUP, None, A.ANY, None, None, A.ANY, A.ANY)) == [b3]
    third = Authorizer(md, enabled=True)
    await third.load()
    assert set(third.bindings.values()) == {b1, b2}
    for bad in (Binding(A.ANY, "x", A.LITERAL, "User:a", "*", A.READ, A.ALLOW),
                Binding(A.TOPIC, "x", A.MATCH, "User:a", "*", A.READ, A.ALLOW),
                Binding(A.TOPIC, "", A.LITERAL, "User:a", "*", A.READ, A.ALLOW),
                Binding(A.CLUSTER, "c", A.LITERAL, "User:a", "*", A.ALTER, A.ALLOW),
                Binding(A.TOPIC, "x", A.LITERAL, "alice", "*", A.READ, A.ALLOW),
                Binding(A.TOPIC, "x", A.LITERAL, "User:a", "*", A.ANY, A.ALLOW),
                Binding(A.TOPIC, "x", A.LITERAL, "User:a", "*", A.READ, A.ANY)):
        assert binding_error(bad), bad
    assert binding_error(b1) is None


class Conn:
    """What the services see of a connection."""

    def __init__(self, user: str | None) -> None:
        self.principal = user
        self.acl_principal = None
        self.transport = None
        self.peer = ("127.0.0.1", 5555)


async def call(b, conn, service, request, version):
    header = _index.request_header.RequestHeader(service.API_KEY, version, 1, "test")
    frame = b"".join(encode_request(header, request))
    header, req = decode_request(memoryview(bytearray(frame))[4:])
    return await service.handle(b, conn, header, req)


@pytest.fixture
async def broker(memory_broker):
    b = await memory_broker(basin="test-basin", authorizer=True, super_users=("User:admin",))
    await b.acls.load()
    await b.topics.create("orders", 1, {})
    await b.topics.create("secret", 1, {})
    return b


async def test_acl_apis_and_enforcement(broker):
    b = broker
    admin, alice = Conn("admin"), Conn("alice")
    r = await call(b, alice, create_acls, CreateAclsRequest(creations=[AclCreation(
        resource_type=A.TOPIC, resource_name="orders", resource_pattern_type=A.LITERAL,
        principal="User:alice", host="*", operation=A.READ, permission_type=A.ALLOW)]), 2)
    assert r.results[0].error_code == E.CLUSTER_AUTHORIZATION_FAILED
    r = await call(b, admin, create_acls, CreateAclsRequest(creations=[
        AclCreation(resource_type=A.TOPIC, resource_name="orders",
                    resource_pattern_type=A.LITERAL, principal="User:alice", host="*",
                    operation=A.READ, permission_type=A.ALLOW),
        AclCreation(resource_type=A.TOPIC, resource_name="x", resource_pattern_type=A.MATCH,
                    principal="User:alice", host="*", operation=A.READ,
                    permission_type=A.ALLOW)]), 2)
    assert [x.error_code for x in r.results] == [0, E.INVALID_REQUEST]
    r = await call(b, admin, describe_acls, DescribeAclsRequest(
        resource_type_filter=A.ANY, resource_name_filter=None, pattern_type_filter=A.ANY,
        principal_filter=None, host_filter=None, operation=A.ANY, permission_type=A.ANY), 2)
    assert [(x.resource_name, [a.principal for a in x.acls]) for x in r.resources] == [
        ("orders", ["User:alice"])]

    # Metadata: alice sees orders (READ implies DESCRIBE), not secret
    r = await call(b, alice, metadata, MetadataRequest(topics=None), 9)
    assert [t.name for t in r.topics] == ["orders"]
    r = await call(b, alice, metadata, MetadataRequest(topics=[
        MetadataRequestTopic(name="secret")], allow_auto_topic_creation=True), 9)
    assert r.topics[0].error_code == E.TOPIC_AUTHORIZATION_FAILED
    r = await call(b, admin, metadata, MetadataRequest(topics=None), 9)
    assert [t.name for t in r.topics] == ["orders", "secret"]

    async def offsets(conn, topic):
        r = await call(b, conn, list_offsets, ListOffsetsRequest(
            replica_id=-1, isolation_level=0, topics=[ListOffsetsTopic(name=topic, partitions=[
                ListOffsetsPartition(partition_index=0, timestamp=-1)])]), 5)
        return r.topics[0].partitions[0].error_code
    assert await offsets(alice, "orders") == 0
    assert await offsets(alice, "secret") == E.TOPIC_AUTHORIZATION_FAILED
    assert await offsets(Conn(None), "orders") == E.TOPIC_AUTHORIZATION_FAILED, "ANONYMOUS"

    r = await call(b, admin, delete_acls, DeleteAclsRequest(filters=[DeleteAclsFilter(
        resource_type_filter=A.TOPIC, resource_name_filter="orders",
        pattern_type_filter=A.LITERAL, principal_filter=None, host_filter=None,
        operation=A.ANY, permission_type=A.ANY)]), 2)
    assert [m.principal for m in r.filter_results[0].matching_acls] == ["User:alice"]
    assert await offsets(alice, "orders") == E.TOPIC_AUTHORIZATION_FAILED


async def test_without_an_authorizer_acl_apis_are_disabled(memory_broker):
    b = await memory_broker(basin="test-basin")
    r = await call(b, Conn("x"), describe_acls, DescribeAclsRequest(
        resource_type_filter=A.ANY, resource_name_filter=None, pattern_type_filter=A.ANY,
        principal_filter=None, host_filter=None, operation=A.ANY, permission_type=A.ANY), 2)
    assert r.error_code == E.SECURITY_DISABLED


async def test_authorized_operations_when_asked(broker):
    from broker.protocol.messages.describe_cluster_request import DescribeClusterRequest
    from broker.services import describe_cluster
    b = broker
    await b.acls.create([allow(A.TOPIC, "orders", "User:alice", A.READ),
                         allow(A.CLUSTER, A.CLUSTER_NAME, "User:alice", A.DESCRIBE)])
    alice = Conn("alice")
    r = await call(b, alice, metadata, MetadataRequest(
        topics=None, include_topic_authorized_operations=True,
        include_cluster_authorized_operations=True), 10)
    (t,) = r.topics
    assert t.topic_authorized_operations == (1 << A.READ) | (1 << A.DESCRIBE)
    assert r.cluster_authorized_operations == 1 << A.DESCRIBE
    r = await call(b, alice, metadata, MetadataRequest(topics=None), 10)
    assert r.topics[0].topic_authorized_operations == -2147483648, "not asked"
    r = await call(b, alice, describe_cluster, DescribeClusterRequest(
        include_cluster_authorized_operations=True), 1)
    assert r.cluster_authorized_operations == 1 << A.DESCRIBE
    r = await call(b, Conn("admin"), describe_cluster, DescribeClusterRequest(
        include_cluster_authorized_operations=True), 1)
    assert r.cluster_authorized_operations == sum(1 << op for op in A.SUPPORTED[A.CLUSTER])


def test_principals_of_connections():
    from broker.acls import connection_principal

    class Transport:
        def __init__(self, cert):
            self.cert = cert

        def get_extra_info(self, name):
            return self.cert if name == "peercert" else None

    c = Conn("alice")
    assert connection_principal(c) == "User:alice"
    c = Conn(None)
    assert connection_principal(c) == "User:ANONYMOUS"
    c.transport = Transport({"subject": ((("countryName", "US"),), (("organizationName",
                                                                      "Acme"),),
                                         (("commonName", "orders-svc"),))})
    assert connection_principal(c) == "User:CN=orders-svc,O=Acme,C=US", "RFC 2253 order"
