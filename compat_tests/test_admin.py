"""Admin APIs with confluent-kafka's AdminClient and kafka-python's KafkaAdminClient (and the
repo codec where a client has no call for it): topics, partitions, records, configs, cluster,
log dirs, leader epochs, topic names and auto-creation."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection, \
    TopicPartition
from confluent_kafka.admin import (
    AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewPartitions,
    NewTopic,
)
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import NewPartitions as KNewPartitions
from kafka.admin import NewTopic as KNewTopic
from kafka.errors import InvalidPartitionsError, InvalidTopicError, TopicAlreadyExistsError

from broker.protocol.errors import ErrorCode
from broker.protocol.messages.offset_for_leader_epoch_request import (
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
)
from test_bad_input import Wire
from test_produce_fetch import ck_consume, ck_produce, kp_consume

OFFSET_FOR_LEADER_EPOCH = 23


@pytest.fixture(scope="module")
def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


@pytest.fixture(scope="module")
def kadmin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    yield a
    a.close()


def _code(fut) -> int:
    with pytest.raises(KafkaException) as e:
        fut.result(20)
    return e.value.args[0].code()


def _topic_id(admin, name: str):
    (desc,) = admin.describe_topics(TopicCollection([name])).values()
    return desc.result(20).topic_id


# ------------------------------------------------------------------ topics


def test_create_delete_recreate_topic(broker, admin, kadmin, topic_name):
    admin.create_topics([NewTopic(topic_name, 3)])[topic_name].result(20)
    assert _code(admin.create_topics([NewTopic(topic_name, 1)])[topic_name]) == \
        KafkaError.TOPIC_ALREADY_EXISTS
    with pytest.raises(TopicAlreadyExistsError):
        kadmin.create_topics([KNewTopic(topic_name, 1, 1)])
    first_id = _topic_id(admin, topic_name)
    reports = ck_produce(broker, topic_name, [{"value": b"old-%d" % i, "partition": 1}
                                              for i in range(5)])
    assert [m.offset() for _, m in reports] == list(range(5))
    kadmin.delete_topics([topic_name])
    assert topic_name not in kadmin.list_topics()
    assert _code(admin.delete_topics([topic_name])[topic_name]) == \
        KafkaError.UNKNOWN_TOPIC_OR_PART
    kadmin.create_topics([KNewTopic(topic_name, 2, 1)])
    md = admin.list_topics(topic_name, timeout=10).topics[topic_name]
    assert sorted(md.partitions) == [0, 1]
    second_id = _topic_id(admin, topic_name)
    assert second_id != first_id
    reports = ck_produce(broker, topic_name, [{"value": b"new", "partition": 1}])
    assert reports[0][1].offset() == 0  # a recreated topic starts at offset 0
    assert [(r.offset, r.value) for r in kp_consume(broker, topic_name, 1, partitions=[1])] \
        == [(0, b"new")]


@pytest.mark.parametrize("name", ["bad name!", "..", "a" * 250, "é", "with/slash"])
def test_invalid_topic_names(admin, kadmin, name):
    assert _code(admin.create_topics([NewTopic(name, 1)])[name]) == KafkaError.TOPIC_EXCEPTION
    with pytest.raises(InvalidTopicError):
        kadmin.create_topics([KNewTopic(name, 1, 1)])
    assert name not in kadmin.list_topics()


def test_create_topics_validate_only_creates_nothing(admin, kadmin, topic_name):
    admin.create_topics([NewTopic(topic_name, 4)], validate_only=True)[topic_name].result(20)
    kadmin.create_topics([KNewTopic(topic_name, 4, 1)], validate_only=True)
    assert topic_name not in kadmin.list_topics()


def test_consumers_with_auto_create_off_do_not_create_topics(broker, admin, kadmin,
                                                             topic_name):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compat-unused",
                  "allow.auto.create.topics": False})
    md = c.list_topics(topic_name, timeout=10)
    assert md.topics[topic_name].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    c.close()
    k = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                      allow_auto_create_topics=False)
    assert not k.partitions_for_topic(topic_name)
    k.close()
    assert topic_name not in kadmin.list_topics()
    # a producer's Metadata request may create it (the broker allows auto-creation)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    assert p.send(topic_name, b"made").get(20).offset == 0
    p.close()
    assert sorted(admin.list_topics(topic_name, timeout=10).topics[topic_name].partitions) \
        == [0]


# ------------------------------------------------------------------ partitions


def test_create_partitions(broker, admin, kadmin, topic_name):
    admin.create_topics([NewTopic(topic_name, 2)])[topic_name].result(20)
    admin.create_partitions([NewPartitions(topic_name, 5)],
                            validate_only=True)[topic_name].result(20)
    assert len(admin.list_topics(topic_name, timeout=10).topics[topic_name].partitions) == 2
    admin.create_partitions([NewPartitions(topic_name, 3)])[topic_name].result(20)
    assert _code(admin.create_partitions([NewPartitions(topic_name, 2)])[topic_name]) == \
        KafkaError.INVALID_PARTITIONS
    assert _code(admin.create_partitions([NewPartitions(topic_name, 3)])[topic_name]) == \
        KafkaError.INVALID_PARTITIONS
    assert _code(admin.create_partitions([NewPartitions(topic_name, 4, [[1]])])[topic_name]) \
        == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert _code(admin.create_partitions([NewPartitions(topic_name, 5, [[0]])])[topic_name]) \
        == KafkaError.INVALID_REPLICA_ASSIGNMENT
    admin.create_partitions([NewPartitions(topic_name, 4, [[0]])])[topic_name].result(20)
    kadmin.create_partitions({topic_name: KNewPartitions(6)})
    with pytest.raises(InvalidPartitionsError):
        kadmin.create_partitions({topic_name: KNewPartitions(6)})
    assert _code(admin.create_partitions([NewPartitions("no-such-topic-x", 2)])[
        "no-such-topic-x"]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert _code(admin.create_partitions([NewPartitions(topic_name, 20_000)])[topic_name]) \
        == KafkaError.POLICY_VIOLATION  # no request creates more than 10,000 partitions
    md = admin.list_topics(topic_name, timeout=10).topics[topic_name]
    assert sorted(md.partitions) == list(range(6))
    # the new partitions take records (a fresh producer sees them) and start at offset 0
    reports = ck_produce(broker, topic_name, [{"value": b"p5", "partition": 5}])
    assert (reports[0][0], reports[0][1].offset()) == (None, 0)
    assert [r.value for r in kp_consume(broker, topic_name, 1, partitions=[5])] == [b"p5"]


# ------------------------------------------------------------------ records


def test_delete_records(broker, admin, kadmin, topic_name):
    admin.create_topics([NewTopic(topic_name, 2)])[topic_name].result(20)
    ck_produce(broker, topic_name, [{"value": b"%d" % i, "partition": 0} for i in range(10)])
    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, 4)]).values()
    assert fut.result(20).low_watermark == 4
    res = kadmin.delete_records({KTP(topic_name, 0): 6})
    assert res[KTP(topic_name, 0)]["low_watermark"] == 6
    # deleting below the current start changes nothing
    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, 2)]).values()
    assert fut.result(20).low_watermark == 6
    # consumers starting from "earliest" start at the new log start offset
    got = ck_consume(broker, topic_name, 4, offset=-2)  # OFFSET_BEGINNING
    assert [(m.offset(), m.value()) for m in got] == [(i, b"%d" % i) for i in range(6, 10)]
    k = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    assert k.beginning_offsets([KTP(topic_name, 0)]) == {KTP(topic_name, 0): 6}
    k.close()
    got = kp_consume(broker, topic_name, 4, offset=0, auto_offset_reset="earliest")
    assert [r.offset for r in got] == [6, 7, 8, 9]
    # past the high watermark: OFFSET_OUT_OF_RANGE; unknown partition
    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, 1000)]).values()
    assert _code(fut) == KafkaError.OFFSET_OUT_OF_RANGE
    # everything (offset -1: the high watermark)
    (fut,) = admin.delete_records([TopicPartition(topic_name, 1, -1)]).values()
    assert fut.result(20).low_watermark == 0  # partition 1 is empty
    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, -1)]).values()
    low = fut.result(20).low_watermark
    assert low >= 10
    ck_produce(broker, topic_name, [{"value": b"after", "partition": 0}])
    got = ck_consume(broker, topic_name, 1, offset=-2)
    assert got[0].value() == b"after" and got[0].offset() >= low


def test_delete_records_leaves_the_high_watermark_alone(broker, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1)])[topic_name].result(20)
    ck_produce(broker, topic_name, [{"value": b"%d" % i} for i in range(3)])
    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, 1)]).values()
    assert fut.result(20).low_watermark == 1
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compat-unused"})
    assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (1, 3)
    c.close()


# ------------------------------------------------------------------ configs


def _describe(admin, kind: str, name: str, **kw) -> dict:
    (fut,) = admin.describe_configs([ConfigResource(kind, name)], **kw).values()
    return fut.result(20)


def test_describe_topic_configs(broker, admin, kadmin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1, config={
        "retention.ms": "3600000", "cleanup.policy": "compact"})])[topic_name].result(20)
    cfg = _describe(admin, "topic", topic_name)
    ret, mmb = cfg["retention.ms"], cfg["max.message.bytes"]
    assert (ret.value, ret.source, ret.is_default) == \
        ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value, False)
    assert (mmb.value, mmb.source, mmb.is_default, mmb.is_read_only) == \
        ("1048588", ConfigSource.DEFAULT_CONFIG.value, True, False)
    assert cfg["cleanup.policy"].value == "compact"
    # kafka-python: only the modified ones by default, all (with types) when asked
    res = kadmin.describe_configs([KConfigResource(ConfigResourceType.TOPIC, topic_name)])
    assert set(res["topic"][topic_name]) == {"retention.ms", "cleanup.policy"}
    res = kadmin.describe_configs([KConfigResource(ConfigResourceType.TOPIC, topic_name)],
                                  include_synonyms=True, config_filter="all")
    entry = res["topic"][topic_name]["max.message.bytes"]
    assert (entry["value"], entry["config_source"], entry["config_type"]) == \
        ("1048588", "DEFAULT_CONFIG", "INT")
    assert entry["synonyms"] == [{"name": "message.max.bytes", "value": "1048588",
                                  "source": "DEFAULT_CONFIG"}]
    entry = res["topic"][topic_name]["retention.ms"]
    assert (entry["value"], entry["config_source"], entry["config_type"]) == \
        ("3600000", "DYNAMIC_TOPIC_CONFIG", "LONG")
    assert entry["synonyms"] == [{"name": "retention.ms", "value": "3600000",
                                  "source": "DYNAMIC_TOPIC_CONFIG"}]
    assert res["topic"][topic_name]["cleanup.policy"]["config_type"] == "LIST"
    assert _code(admin.describe_configs([ConfigResource("topic", "no-such-topic-y")])[
        ConfigResource("topic", "no-such-topic-y")]) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_broker_configs(broker, admin, kadmin):
    cfg = _describe(admin, "broker", "0")
    port = broker.bootstrap.rsplit(":", 1)[1]
    assert cfg["advertised.listeners"].value == f"PLAINTEXT://127.0.0.1:{port}"
    assert (cfg["num.partitions"].value, cfg["num.partitions"].source) == \
        ("1", ConfigSource.STATIC_BROKER_CONFIG.value)
    assert (cfg["message.max.bytes"].value, cfg["message.max.bytes"].source) == \
        ("1048588", ConfigSource.DEFAULT_CONFIG.value)
    assert all(e.is_read_only for e in cfg.values())
    res = kadmin.describe_configs([KConfigResource(ConfigResourceType.BROKER, "0")],
                                  config_filter="all")
    assert res["broker"]["0"]["auto.create.topics.enable"]["value"] == "true"


def test_alter_configs_replaces_the_topic_config_set(broker, admin, kadmin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1, config={"retention.ms": "3600000"})])[
        topic_name].result(20)
    res = ConfigResource("topic", topic_name, set_config={"max.message.bytes": "5000"})
    admin.alter_configs([res], validate_only=True)[res].result(20)
    assert _describe(admin, "topic", topic_name)["max.message.bytes"].value == "1048588"
    admin.alter_configs([res])[res].result(20)
    cfg = _describe(admin, "topic", topic_name)
    assert cfg["max.message.bytes"].value == "5000"
    assert (cfg["retention.ms"].value, cfg["retention.ms"].source) == \
        ("604800000", ConfigSource.DEFAULT_CONFIG.value)  # not in the new set: reset
    # the new limit is enforced at once
    (bad,) = ck_produce(broker, topic_name, [{"value": b"x" * 6000}])
    assert bad[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    kadmin.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic_name,
                                          configs={"max.message.bytes": "100000"})])
    ((err, m),) = ck_produce(broker, topic_name, [{"value": b"x" * 6000}])
    assert err is None and m.offset() == 0
    bad = ConfigResource("topic", topic_name, set_config={"no.such.config": "1"})
    assert _code(admin.alter_configs([bad])[bad]) == KafkaError.INVALID_CONFIG
    bad = ConfigResource("topic", topic_name, set_config={"retention.ms": "soon"})
    assert _code(admin.alter_configs([bad])[bad]) == KafkaError.INVALID_CONFIG
    bad = ConfigResource("topic", "no-such-topic-z", set_config={"retention.ms": "1"})
    assert _code(admin.alter_configs([bad])[bad]) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_incremental_alter_configs(broker, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1)])[topic_name].result(20)

    def alter(*entries, validate_only=False):
        res = ConfigResource("topic", topic_name, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=op) for name, value, op in entries])
        return admin.incremental_alter_configs([res], validate_only=validate_only)[res]

    SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
    APPEND, SUBTRACT = AlterConfigOpType.APPEND, AlterConfigOpType.SUBTRACT
    alter(("retention.ms", "1000", SET), validate_only=True).result(20)
    assert _describe(admin, "topic", topic_name)["retention.ms"].value == "604800000"
    alter(("retention.ms", "1000", SET), ("cleanup.policy", "compact", APPEND)).result(20)
    cfg = _describe(admin, "topic", topic_name)
    assert (cfg["retention.ms"].value, cfg["cleanup.policy"].value) == ("1000",
                                                                        "delete,compact")
    alter(("cleanup.policy", "delete", SUBTRACT)).result(20)
    assert _describe(admin, "topic", topic_name)["cleanup.policy"].value == "compact"
    alter(("retention.ms", None, DELETE)).result(20)
    cfg = _describe(admin, "topic", topic_name)
    assert (cfg["retention.ms"].value, cfg["retention.ms"].source) == \
        ("604800000", ConfigSource.DEFAULT_CONFIG.value)
    assert cfg["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert _code(alter(("retention.ms", "5", APPEND))) == KafkaError.INVALID_CONFIG
    assert _code(alter(("max.message.bytes", "5", SUBTRACT))) == KafkaError.INVALID_CONFIG
    assert _code(alter(("cleanup.policy", "sometimes", APPEND))) == KafkaError.INVALID_CONFIG
    assert _code(alter(("no.such.config", "1", SET))) == KafkaError.INVALID_CONFIG
    assert _describe(admin, "topic", topic_name)["cleanup.policy"].value == "compact"


def test_broker_configs_are_read_only(admin, kadmin):
    res = ConfigResource("broker", "0", incremental_configs=[ConfigEntry(
        "num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    assert _code(admin.incremental_alter_configs([res])[res]) == KafkaError.INVALID_REQUEST
    res = ConfigResource("broker", "0", set_config={"log.retention.hours": "1"})
    assert _code(admin.alter_configs([res])[res]) == KafkaError.INVALID_REQUEST
    out = kadmin.alter_configs([KConfigResource(ConfigResourceType.BROKER, "0",
                                                configs={"num.partitions": "3"})],
                               raise_on_unknown=False)
    assert out["broker"]["0"] != "OK"
    assert _describe(admin, "broker", "0")["num.partitions"].value == "1"


# ------------------------------------------------------------------ cluster, log dirs, epochs


def test_describe_cluster(broker, admin, kadmin):
    desc = admin.describe_cluster().result(20)  # librdkafka asks with Metadata
    host, port = broker.bootstrap.rsplit(":", 1)
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(0, host, int(port))]
    assert desc.controller.id == 0
    assert desc.cluster_id == admin.list_topics("any", timeout=10).cluster_id
    k = kadmin.describe_cluster()  # kafka-python asks with DescribeCluster
    assert set(k["authorized_operations"]) == {
        "CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS",
        "IDEMPOTENT_WRITE"}
    assert (k["cluster_id"], k["controller_id"]) == (desc.cluster_id, 0)
    assert [(b["broker_id"], b["host"], b["port"]) for b in k["brokers"]] == \
        [(0, host, int(port))]


def test_describe_log_dirs(broker, admin, kadmin, topic_name):
    admin.create_topics([NewTopic(topic_name, 2)])[topic_name].result(20)
    ck_produce(broker, topic_name, [{"value": b"x" * 1000, "partition": 0} for _ in range(20)])

    def sizes():
        (b,) = kadmin.describe_log_dirs()
        (d,) = b["log_dirs"]
        assert d["error_code"] == 0 and d["log_dir"].startswith(broker.data_dir)
        assert d["total_bytes"] > 0 and 0 <= d["usable_bytes"] <= d["total_bytes"]
        (t,) = [t for t in d["topics"] if t["name"] == topic_name]
        return {p["partition_index"]: p["partition_size"] for p in t["partitions"]}

    first = sizes()
    assert first[1] == 0 and 20_000 <= first[0] < 40_000
    ck_produce(broker, topic_name, [{"value": b"y" * 1000, "partition": 1} for _ in range(5)])
    second = sizes()
    assert second[0] == first[0] and 5_000 <= second[1] < 10_000


def test_offset_for_leader_epoch(broker, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 2)])[topic_name].result(20)
    ck_produce(broker, topic_name, [{"value": b"v", "partition": 0} for _ in range(7)])
    w = Wire(broker.bootstrap)
    try:
        def ask(topic, partition, epoch, current=-1, version=4):
            resp = w.call(OFFSET_FOR_LEADER_EPOCH, version, OffsetForLeaderEpochRequest(
                replica_id=-1, topics=[OffsetForLeaderTopic(topic=topic, partitions=[
                    OffsetForLeaderPartition(partition=partition, current_leader_epoch=current,
                                             leader_epoch=epoch)])]))
            (p,) = resp.topics[0].partitions
            return p.error_code, p.leader_epoch, p.end_offset

        for version in (2, 3, 4):
            assert ask(topic_name, 0, 0, version=version) == (0, 0, 7)
        assert ask(topic_name, 1, 0) == (0, 0, 0)
        assert ask(topic_name, 0, 0, current=0) == (0, 0, 7)
        assert ask(topic_name, 0, 3) == (0, -1, -1)  # an epoch this partition never had
        assert ask(topic_name, 0, 0, current=5) == (ErrorCode.UNKNOWN_LEADER_EPOCH, -1, -1)
        assert ask(topic_name, 0, 0, current=-3) == (ErrorCode.FENCED_LEADER_EPOCH, -1, -1)
        assert ask(topic_name, 9, 0) == (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1)
        assert ask("no-such-topic-w", 0, 0) == (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1)
    finally:
        w.close()


def test_consumer_validates_its_position_with_offset_for_leader_epoch(broker, topic_name):
    """librdkafka validates a stored position (offset + leader epoch) with
    OffsetForLeaderEpoch before fetching: a position at the high watermark stays put."""
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        p.produce(topic_name, value=b"%d" % i)
    assert p.flush(20) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    tp = TopicPartition(topic_name, 0, 1, "", 0)  # offset 1 in leader epoch 0
    c.assign([tp])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.offset(), m.value(), m.leader_epoch()))
    c.close()
    assert got == [(1, b"1", 0), (2, b"2", 0)]


def test_confluent_lists_all_topics(broker, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1)])[topic_name].result(20)
    assert topic_name in admin.list_topics(timeout=10).topics


def test_wire_level_errors(broker, admin, topic_name):
    """What the clients check on their side before asking: the broker's own answers."""
    from broker.protocol.messages.delete_records_request import (
        DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
    )
    from broker.protocol.messages.describe_configs_request import (
        DescribeConfigsRequest, DescribeConfigsResource,
    )
    admin.create_topics([NewTopic(topic_name, 1)])[topic_name].result(20)
    compacted = topic_name + "-c"
    admin.create_topics([NewTopic(compacted, 1, config={"cleanup.policy": "compact"})])[
        compacted].result(20)
    w = Wire(broker.bootstrap)
    try:
        resp = w.call(21, 0, DeleteRecordsRequest(timeout_ms=5000, topics=[
            DeleteRecordsTopic(name=compacted, partitions=[
                DeleteRecordsPartition(partition_index=0, offset=-1)])]))
        assert [(p.error_code, p.low_watermark) for p in resp.topics[0].partitions] == \
            [(ErrorCode.POLICY_VIOLATION, -1)]
        resp = w.call(21, 2, DeleteRecordsRequest(timeout_ms=5000, topics=[
            DeleteRecordsTopic(name=topic_name, partitions=[
                DeleteRecordsPartition(partition_index=3, offset=0),
                DeleteRecordsPartition(partition_index=0, offset=-2)]),
            DeleteRecordsTopic(name="no-such-topic-v", partitions=[
                DeleteRecordsPartition(partition_index=0, offset=0)])]))
        assert [[(p.partition_index, p.error_code, p.low_watermark) for p in t.partitions]
                for t in resp.topics] == [
            [(3, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1), (0, ErrorCode.OFFSET_OUT_OF_RANGE, -1)],
            [(0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)]]
        resp = w.call(32, 4, DescribeConfigsRequest(resources=[
            DescribeConfigsResource(resource_type=4, resource_name="", configuration_keys=None),
            DescribeConfigsResource(resource_type=4, resource_name="x", configuration_keys=None),
            DescribeConfigsResource(resource_type=2, resource_name="bad name",
                                    configuration_keys=None),
            DescribeConfigsResource(resource_type=2, resource_name=topic_name,
                                    configuration_keys=["retention.ms", "nope"]),
            DescribeConfigsResource(resource_type=99, resource_name="y",
                                    configuration_keys=None)],
            include_synonyms=False, include_documentation=False))
        assert [(r.error_code, [c.name for c in r.configs]) for r in resp.results] == [
            (0, []),  # the cluster-wide dynamic defaults: this broker has none
            (ErrorCode.INVALID_REQUEST, []), (ErrorCode.INVALID_TOPIC_EXCEPTION, []),
            (0, ["retention.ms"]), (ErrorCode.INVALID_REQUEST, [])]
    finally:
        w.close()


def _version_cases():
    from broker.protocol.messages import (
        alter_configs_request as ac, create_partitions_request as cp,
        delete_records_request as dr, describe_cluster_request as dc,
        describe_configs_request as dcf, describe_log_dirs_request as dl,
        incremental_alter_configs_request as iac,
    )

    def cases(api_key, module, make):
        lo, hi = module.VALID_VERSIONS
        return [pytest.param(api_key, v, make, id=f"{module.NAME}-v{v}")
                for v in range(lo, hi + 1)]

    return [
        *cases(37, cp, lambda t: cp.CreatePartitionsRequest(topics=[cp.CreatePartitionsTopic(
            name=t, count=2, assignments=None)], timeout_ms=5000, validate_only=True)),
        *cases(21, dr, lambda t: dr.DeleteRecordsRequest(topics=[dr.DeleteRecordsTopic(
            name=t, partitions=[dr.DeleteRecordsPartition(partition_index=0, offset=0)])],
            timeout_ms=5000)),
        *cases(32, dcf, lambda t: dcf.DescribeConfigsRequest(resources=[
            dcf.DescribeConfigsResource(resource_type=2, resource_name=t,
                                        configuration_keys=["max.message.bytes"])],
            include_synonyms=True, include_documentation=False)),
        *cases(33, ac, lambda t: ac.AlterConfigsRequest(resources=[ac.AlterConfigsResource(
            resource_type=2, resource_name=t, configs=[ac.AlterableConfig(
                name="retention.ms", value="1000")])], validate_only=True)),
        *cases(44, iac, lambda t: iac.IncrementalAlterConfigsRequest(resources=[
            iac.AlterConfigsResource(resource_type=2, resource_name=t, configs=[
                iac.AlterableConfig(name="retention.ms", config_operation=0,
                                    value="1000")])], validate_only=True)),
        *cases(60, dc, lambda t: dc.DescribeClusterRequest(
            include_cluster_authorized_operations=False, endpoint_type=1,
            include_fenced_brokers=False)),
        *cases(35, dl, lambda t: dl.DescribeLogDirsRequest(topics=[
            dl.DescribableLogDirTopic(topic=t, partitions=[0])])),
    ]


@pytest.fixture(scope="module")
def version_topic(admin):
    name = f"admin-versions-{time.time_ns()}"
    admin.create_topics([NewTopic(name, 1)])[name].result(20)
    return name


@pytest.mark.parametrize("api_key,version,make", _version_cases())
def test_every_codec_version_is_served(broker, version_topic, api_key, version, make):
    """Each version of each admin API this broker advertises answers without an error."""
    w = Wire(broker.bootstrap)
    try:
        resp = w.call(api_key, version, make(version_topic))
    finally:
        w.close()
    codes = [getattr(resp, "error_code", 0)]
    for group in ("results", "responses", "topics"):
        for item in getattr(resp, group, None) or ():
            codes.append(getattr(item, "error_code", 0))
            codes += [p.error_code for p in getattr(item, "partitions", None) or ()
                      if hasattr(p, "error_code")]
    assert set(codes) == {0}, codes
    if api_key == 35:
        (d,) = resp.results
        assert [(t.name, [p.partition_index for p in t.partitions]) for t in d.topics] == \
            [(version_topic, [0])]
    if api_key == 60:
        assert [b.broker_id for b in resp.brokers] == [0]


def test_describe_cluster_controller_endpoints_are_unsupported(broker):
    from broker.protocol.messages.describe_cluster_request import DescribeClusterRequest
    w = Wire(broker.bootstrap)
    try:
        resp = w.call(60, 1, DescribeClusterRequest(include_cluster_authorized_operations=False,
                                                    endpoint_type=2))
    finally:
        w.close()
    assert (resp.error_code, resp.endpoint_type, resp.brokers) == \
        (ErrorCode.UNSUPPORTED_ENDPOINT_TYPE, 2, [])


def test_api_versions_advertise_every_codec_version_of_the_admin_apis(broker):
    from broker.protocol.messages.api_versions_request import ApiVersionsRequest
    from broker.protocol.registry import APIS
    w = Wire(broker.bootstrap)
    try:
        resp = w.call(18, 3, ApiVersionsRequest(client_software_name="compat",
                                                client_software_version="1"))
    finally:
        w.close()
    ranges = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    for key in (21, 23, 32, 33, 35, 37, 44, 60):
        assert ranges[key] == (APIS[key].decodable_min_version, APIS[key].max_stable_version)
