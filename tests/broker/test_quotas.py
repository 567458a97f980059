"""Client quotas (broker/quotas.py): AlterClientQuotas / DescribeClientQuotas as Kafka
answers them, Kafka's order of precedence, its sampled rate and throttle time, the
controller mutation token bucket and the IP connection rate; and the services on a
broker (ACLs, persistence in metadata)."""
from __future__ import annotations

import pytest

from broker.protocol.errors import ErrorCode
from broker.protocol.messages.alter_client_quotas_request import (
    AlterClientQuotasRequest,
    EntityData,
    EntryData,
    OpData,
)
from broker.protocol.messages.describe_client_quotas_request import (
    ComponentData,
    DescribeClientQuotasRequest,
)
from broker.protocol.messages.create_topics_request import CreatableTopic, CreateTopicsRequest
from broker.protocol.frames import RequestHeader
from broker.quotas import QuotaManager, Rate
from broker.services import (
    alter_client_quotas,
    create_topics,
    describe_client_quotas,
)
from s2core.metadata.memory import MemoryMetadataStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Conn:
    def __init__(self, client_id: str = "app", principal: str | None = None) -> None:
        self.client_id = client_id
        self.principal = principal
        self.quota_user = None
        self.transport = None
        self.peer = None


async def manager(**kw) -> tuple[QuotaManager, Clock]:
    clock = Clock()
    q = QuotaManager(MemoryMetadataStore(), clock=clock, **kw)
    await q.load()
    return q, clock


async def test_alter_describe_and_remove() -> None:
    q, _ = await manager()
    assert not q.client_quotas
    res = await q.alter([([("user", "alice")], [("producer_byte_rate", 1024.0, False),
                                                ("request_percentage", 12.5, False)]),
                         ([("client-id", None)], [("consumer_byte_rate", 2048.0, False)]),
                         ([("ip", "10.0.0.1")], [("connection_creation_rate", 5.0, False)])],
                        False)
    assert res == [(0, None)] * 3
    assert q.client_quotas and q.ip_quotas
    everything = q.describe([], False)
    assert [e for e, _ in everything] == [(("client-id", None),), (("ip", "10.0.0.1"),),
                                          (("user", "alice"),)]
    assert q.describe([("user", 0, "alice")], True) == [
        ((("user", "alice"),), {"producer_byte_rate": 1024.0, "request_percentage": 12.5})]
    assert [e for e, _ in q.describe([("client-id", 1, None)], False)] == [
        (("client-id", None),)]
    assert [e for e, _ in q.describe([("user", 2, None)], False)] == [(("user", "alice"),)]
    # an entity of two types: matched when not strict, not when strict
    await q.alter([([("user", "alice"), ("client-id", "c1")],
                    [("producer_byte_rate", 10.0, False)])], False)
    assert len(q.describe([("user", 0, "alice")], False)) == 2
    assert len(q.describe([("user", 0, "alice")], True)) == 1
    # remove one key, then the last: the entity is gone
    assert await q.alter([([("user", "alice")], [("request_percentage", 0, True)])],
                         False) == [(0, None)]
    assert q.describe([("user", 0, "alice")], True)[0][1] == {"producer_byte_rate": 1024.0}
    await q.alter([([("user", "alice")], [("producer_byte_rate", 0, True)])], False)
    assert q.describe([("user", 0, "alice")], True) == []
    # what is stored is read back by a new manager (another broker start)
    again = QuotaManager(q.metadata)
    await again.load()
    assert again.entities == q.entities


async def test_validate_only_changes_nothing() -> None:
    q, _ = await manager()
    assert await q.alter([([("user", "bob")], [("producer_byte_rate", 5.0, False)])],
                         True) == [(0, None)]
    assert q.entities == {} and not q.client_quotas


@pytest.mark.parametrize("entity, ops, message", [
    ([], [("producer_byte_rate", 1.0, False)], "Invalid empty client quota entity"),
    ([("group", "g")], [("producer_byte_rate", 1.0, False)],
     "Unhandled client quota entity type: group"),
    ([("user", "a"), ("user", "b")], [("producer_byte_rate", 1.0, False)],
     "duplicate entity entry user"),
    ([("user", "")], [("producer_byte_rate", 1.0, False)], "Empty user not supported"),
    ([("ip", "1.2.3.4"), ("user", "a")], [("connection_creation_rate", 1.0, False)],
     "IP entity should not be combined"),
    ([("ip", "not an ip")], [("connection_creation_rate", 1.0, False)],
     "not a valid IP"),
    ([("user", "a")], [("connection_creation_rate", 1.0, False)],
     "Invalid configuration key connection_creation_rate"),
    ([("ip", None)], [("producer_byte_rate", 1.0, False)],
     "Invalid configuration key producer_byte_rate"),
    ([("user", "a")], [("producer_byte_rate", 1.5, False)], "must be a Long value"),
    ([("ip", None)], [("connection_creation_rate", 2.5, False)], "must be a Integer value"),
    ([("user", "a")], [("producer_byte_rate", -1.0, False)], "non-negative"),
    ([("user", "a")], [("producer_byte_rate", 1.0, False), ("producer_byte_rate", 2.0, False)],
     "Duplicate quota key producer_byte_rate"),
])
async def test_alter_refuses_what_kafka_refuses(entity, ops, message) -> None:
    q, _ = await manager()
    [(code, text)] = await q.alter([(entity, ops)], False)
    assert code == ErrorCode.INVALID_REQUEST and message in text
    assert q.entities == {}


async def test_duplicate_entity_in_one_request() -> None:
    q, _ = await manager()
    res = await q.alter([([("user", "a"), ("client-id", "c")], [("producer_byte_rate", 1, False)]),
                         ([("client-id", "c"), ("user", "a")], [("consumer_byte_rate", 1, False)])],
                        False)
    assert res[0] == (0, None)
    assert res[1][0] == ErrorCode.INVALID_REQUEST and "Ignoring duplicate entity" in res[1][1]


@pytest.mark.parametrize("components, code", [
    ([("", 0, "x")], ErrorCode.INVALID_REQUEST),
    ([("user", 0, "a"), ("user", 2, None)], ErrorCode.INVALID_REQUEST),
    ([("topic", 0, "a")], ErrorCode.UNSUPPORTED_VERSION),
    ([("user", 0, None)], ErrorCode.INVALID_REQUEST),
    ([("user", 1, "a")], ErrorCode.INVALID_REQUEST),
    ([("user", 2, "a")], ErrorCode.INVALID_REQUEST),
    ([("user", 7, None)], ErrorCode.INVALID_REQUEST),
    ([("ip", 2, None), ("client-id", 2, None)], ErrorCode.INVALID_REQUEST),
])
async def test_describe_refuses_bad_filters(components, code) -> None:
    from broker.quotas import QuotaError

    q, _ = await manager()
    with pytest.raises(QuotaError) as e:
        q.describe(components, False)
    assert e.value.code == code


async def test_precedence_is_kafkas() -> None:
    q, _ = await manager()
    levels = [
        ([("user", "u"), ("client-id", "c")], 1),
        ([("user", "u"), ("client-id", None)], 2),
        ([("user", "u")], 3),
        ([("user", None), ("client-id", "c")], 4),
        ([("user", None), ("client-id", None)], 5),
        ([("user", None)], 6),
        ([("client-id", "c")], 7),
        ([("client-id", None)], 8),
    ]
    for entity, value in levels:
        await q.alter([(entity, [("request_percentage", float(value), False)])], False)
    expected_tags = [("u", "c"), ("u", "c"), ("u", ""), ("u", "c"), ("u", "c"), ("u", ""),
                     ("", "c"), ("", "c")]
    for (entity, value), tags in zip(levels, expected_tags):
        assert q._resolve("u", "c", "request_percentage") == (float(value), tags)
        await q.alter([(entity, [("request_percentage", 0, True)])], False)
    assert q._resolve("u", "c", "request_percentage") is None
    # a quota of another kind does not stand in
    await q.alter([([("user", "u")], [("producer_byte_rate", 1.0, False)])], False)
    assert q._resolve("u", "c", "consumer_byte_rate") is None


def test_rate_is_measured_over_at_least_the_whole_window() -> None:
    r = Rate()
    r.record(1000, 0.0, 1.0, 11)
    assert r.measure(0.0, 1.0, 11) == (100.0, 10.0)  # 10 whole windows assumed
    r.record(1000, 10.5, 1.0, 11)
    rate, span = r.measure(10.5, 1.0, 11)
    assert span == pytest.approx(10.5) and rate == pytest.approx(2000 / 10.5)
    # windows older than the whole span are dropped
    rate, _ = r.measure(11.2, 1.0, 11)
    assert rate == pytest.approx(1000 / 10.7)  # 0.7 s of its window + 10 whole ones


async def test_byte_rate_throttle_time() -> None:
    q, clock = await manager()
    await q.alter([([("client-id", "slow")], [("producer_byte_rate", 100.0, False)])], False)
    produce = "producer_byte_rate"
    # 1,000 bytes at once: 100 B/s over the 10 s it counts for: at the quota
    assert q.record("ANONYMOUS", "slow", produce, 1000) == 0
    # 1,000 more: 200 B/s, twice the quota: (200 - 100) / 100 x 10 s
    assert q.record("ANONYMOUS", "slow", produce, 1000) == 10_000
    # another client id is not limited; a fetch is not a produce
    assert q.record("ANONYMOUS", "fast", produce, 10**9) == 0
    assert q.throttle_request("ANONYMOUS", "slow", 1, 10**9, 0.0) == 0
    # the throttle never exceeds the window span
    assert q.record("ANONYMOUS", "slow", produce, 10**9) == 11_000
    # once the windows have passed, the client is within its quota again
    clock.t += 12
    assert q.record("ANONYMOUS", "slow", produce, 500) == 0


async def test_default_quota_applies_to_each_client_id_on_its_own() -> None:
    q, _ = await manager()
    await q.alter([([("client-id", None)], [("consumer_byte_rate", 100.0, False)])], False)
    assert q.throttle_request("ANONYMOUS", "a", 1, 1000, 0.0) == 0
    assert q.throttle_request("ANONYMOUS", "b", 1, 1000, 0.0) == 0  # not shared with a
    assert q.throttle_request("ANONYMOUS", "a", 1, 1000, 0.0) > 0


async def test_request_percentage() -> None:
    q, _ = await manager()
    await q.alter([([("user", None)], [("request_percentage", 10.0, False)])], False)
    # 0.5 s of handling over a 10 s window: 5%, within 10%
    assert q.throttle_request("alice", "x", 3, 100, 0.5) == 0
    # 1.5 s more: 20%, twice the quota
    assert q.throttle_request("alice", "x", 3, 100, 1.5) == 10_000
    # ApiVersions is not counted; another user has their own measure
    assert q.throttle_request("alice", "x", 18, 100, 100.0) == 0
    assert q.throttle_request("bob", "x", 3, 100, 0.5) == 0


async def test_controller_mutation_token_bucket() -> None:
    q, clock = await manager(window_s=1.0, samples=2)
    await q.alter([([("user", None)], [("controller_mutation_rate", 2.0, False)])], False)
    conn = Conn()
    assert q.mutation_refused(conn) == 0
    assert q.record_mutation(conn, 4) == 0          # the burst: 2/s x 2 s
    assert q.record_mutation(conn, 3) == 1500       # 3 in debt at 2/s
    assert q.mutation_refused(conn) == 1500         # strict versions are refused now
    clock.t += 1.5
    assert q.mutation_refused(conn) == 0            # the debt is paid
    other = Conn(principal="carol")
    assert q.record_mutation(other, 4) == 0         # a bucket per user


async def test_connection_creation_rate() -> None:
    q, clock = await manager(window_s=1.0, samples=2)
    await q.alter([([("ip", None)], [("connection_creation_rate", 2.0, False)])], False)
    await q.alter([([("ip", "10.0.0.9")], [("connection_creation_rate", 100.0, False)])],
                  False)
    assert [q.connection("10.0.0.1") for _ in range(2)] == [0, 0]
    assert q.connection("10.0.0.1") > 0
    assert q.connection("10.0.0.2") == 0            # each IP on its own
    assert all(q.connection("10.0.0.9") == 0 for _ in range(50))  # its own quota
    clock.t += 3
    assert q.connection("10.0.0.1") == 0


def _header(api_key: int, version: int) -> RequestHeader:
    return RequestHeader(api_key, version, 1, "t")


async def test_services_on_a_broker(memory_broker) -> None:
    b = await memory_broker()
    alter = AlterClientQuotasRequest(entries=[EntryData(
        entity=[EntityData(entity_type="client-id", entity_name="c1")],
        ops=[OpData(key="producer_byte_rate", value=4096.0, remove=False)])],
        validate_only=False)
    resp = await alter_client_quotas.handle(b, None, _header(49, 1), alter)
    assert [(e.error_code, e.entity[0].entity_name) for e in resp.entries] == [(0, "c1")]
    desc = await describe_client_quotas.handle(b, None, _header(48, 1),
                                               DescribeClientQuotasRequest(components=[
        ComponentData(entity_type="client-id", match_type=0, match="c1")], strict=False))
    assert desc.error_code == 0
    [entry] = desc.entries
    assert [(v.key, v.value) for v in entry.values] == [("producer_byte_rate", 4096.0)]
    bad = await describe_client_quotas.handle(b, None, _header(48, 1),
                                              DescribeClientQuotasRequest(components=[
        ComponentData(entity_type="user", match_type=9, match=None)], strict=False))
    assert bad.error_code == ErrorCode.INVALID_REQUEST and bad.entries is None


async def test_services_need_the_cluster_acl(memory_broker) -> None:
    b = await memory_broker(authorizer=True)
    conn = Conn(principal="mallory")
    resp = await alter_client_quotas.handle(b, conn, _header(49, 1), AlterClientQuotasRequest(
        entries=[EntryData(entity=[EntityData(entity_type="user", entity_name=None)],
                           ops=[OpData(key="producer_byte_rate", value=1.0, remove=False)])],
        validate_only=False))
    assert resp.entries[0].error_code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    desc = await describe_client_quotas.handle(b, conn, _header(48, 1),
                                               DescribeClientQuotasRequest(components=[],
                                                                           strict=False))
    assert desc.error_code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert b.quotas.entities == {}


async def test_create_topics_under_a_mutation_quota(memory_broker) -> None:
    b = await memory_broker()
    await b.quotas.alter([([("client-id", "admin")],
                           [("controller_mutation_rate", 0.5, False)])], False)
    conn = Conn(client_id="admin")
    # burst 0.5/s x 11 s = 5.5 partitions: the first topic takes the bucket into debt
    first = await create_topics.handle(b, conn, _header(19, 7), CreateTopicsRequest(
        topics=[CreatableTopic(name="q1", num_partitions=8, replication_factor=-1,
                               assignments=[], configs=[])], timeout_ms=1000,
        validate_only=False))
    assert first.topics[0].error_code == 0 and first.throttle_time_ms > 0
    second = await create_topics.handle(b, conn, _header(19, 7), CreateTopicsRequest(
        topics=[CreatableTopic(name="q2", num_partitions=1, replication_factor=-1,
                               assignments=[], configs=[])], timeout_ms=1000,
        validate_only=False))
    assert second.topics[0].error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
    assert second.throttle_time_ms > 0 and b.topics.get("q2") is None
    # version 5 has no such error: accepted, and throttled
    old = await create_topics.handle(b, conn, _header(19, 5), CreateTopicsRequest(
        topics=[CreatableTopic(name="q3", num_partitions=1, replication_factor=-1,
                               assignments=[], configs=[])], timeout_ms=1000,
        validate_only=False))
    assert old.topics[0].error_code == 0 and old.throttle_time_ms > 0
