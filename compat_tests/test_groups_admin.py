"""Group administration with real admin clients (confluent-kafka's AdminClient and
kafka-python's KafkaAdminClient): list, describe, offsets, alter, delete."""
from __future__ import annotations

import time
import uuid

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from test_groups_clients import make_topic, wait_for


def test_confluent_admin_group_lifecycle(broker, topic_name):
    make_topic(broker.bootstrap, topic_name, 3)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    live, idle = f"adm-live-{uuid.uuid4().hex[:8]}", f"adm-idle-{uuid.uuid4().hex[:8]}"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": live,
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c.subscribe([topic_name])
    try:
        wait_for(lambda: c.poll(0.1) is None and len(c.assignment()) == 3, 30,
                 "the consumer to be assigned")
        # alter offsets of an idle group (a commit with generation -1), then read them back
        tps = [TopicPartition(topic_name, p, 10 * (p + 1)) for p in range(3)]
        res = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(idle, tps)])[idle].result(20)
        assert [tp.error for tp in res.topic_partitions] == [None] * 3
        got = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(idle, [TopicPartition(topic_name, p)
                                                 for p in range(3)])])[idle].result(20)
        assert [(tp.partition, tp.offset) for tp in got.topic_partitions] == \
            [(0, 10), (1, 20), (2, 30)]
        listed = admin.list_consumer_groups(
            states={ConsumerGroupState.STABLE}).result(20).valid
        assert live in {g.group_id for g in listed} and idle not in {g.group_id
                                                                     for g in listed}
        listed = {g.group_id: g for g in admin.list_consumer_groups().result(20).valid}
        assert listed[idle].state == ConsumerGroupState.EMPTY
        assert listed[live].type == ConsumerGroupType.CLASSIC
        d = admin.describe_consumer_groups([live])[live].result(20)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 1
        assert d.partition_assignor == "range"
        assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == \
            [0, 1, 2]
        futs = admin.delete_consumer_groups([live, idle])
        assert futs[idle].result(20) is None
        try:
            futs[live].result(20)
            raise AssertionError("a group with members was deleted")
        except Exception as e:  # noqa: BLE001 - the client wraps the Kafka error
            assert "NON_EMPTY_GROUP" in str(e) or "not empty" in str(e).lower(), e
    finally:
        c.close()
    futs = admin.delete_consumer_groups([live])
    assert futs[live].result(20) is None
    assert live not in {g.group_id for g in admin.list_consumer_groups().result(20).valid}


def test_kafka_python_admin(broker, topic_name):
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import MemberToRemove
    from kafka.errors import GroupSubscribedToTopicError, NoError
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as TP
    make_topic(broker.bootstrap, topic_name, 2)
    group = f"kp-adm-{uuid.uuid4().hex[:8]}"
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                      enable_auto_commit=False, session_timeout_ms=6000,
                      heartbeat_interval_ms=500, group_instance_id="kp-static",
                      # kafka-python may join before its first metadata answer names the new
                      # topic ("No partition metadata"), then waits a metadata refresh to rejoin
                      metadata_max_age_ms=1000)
    deadline = time.monotonic() + 30
    while c.partitions_for_topic(topic_name) != {0, 1}:  # its metadata knows the topic
        assert time.monotonic() < deadline, "kafka-python never saw the topic's partitions"
        time.sleep(0.1)
    c.subscribe([topic_name])
    while len(c.assignment()) < 2:
        assert time.monotonic() < deadline, "no assignment"
        c.poll(timeout_ms=100)
    c.commit({TP(topic_name, 0): OffsetAndMetadata(3, "kp", -1)})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups(states_filter=["Stable"])}
        assert listed[group]["group_type"] == "classic"
        d = admin.describe_groups([group])[group]
        assert d["group_state"] == "Stable" and d["protocol_data"] == "range"
        [m] = d["members"]
        assert m["group_instance_id"] == "kp-static"
        assert m["member_assignment"]["assigned_partitions"] == \
            [{"topic": topic_name, "partitions": [0, 1]}]
        assert admin.list_group_offsets({group: None})[group] == \
            {TP(topic_name, 0): OffsetAndMetadata(3, "kp", -1)}
        assert admin.delete_group_offsets(group, [TP(topic_name, 0)]) == \
            {TP(topic_name, 0): GroupSubscribedToTopicError}
        c.close()  # a static member's close leaves it in the group (until its session ends)
        assert admin.describe_groups([group])[group]["group_state"] == "Stable"
        # LeaveGroup v3+ by instance id, as an operator removes a static member
        assert admin.remove_group_members(group, [MemberToRemove(
            group_instance_id="kp-static")]) == {"kp-static": NoError}
        assert admin.describe_groups([group])[group]["group_state"] == "Empty"
        assert admin.alter_group_offsets(group, {TP(topic_name, 1): OffsetAndMetadata(
            9, "x", -1)}) == {TP(topic_name, 1): NoError}
        assert admin.delete_group_offsets(group, [TP(topic_name, 0)]) == \
            {TP(topic_name, 0): NoError}
        assert admin.list_group_offsets({group: None})[group] == \
            {TP(topic_name, 1): OffsetAndMetadata(9, "x", -1)}
        assert admin.delete_groups([group]) == {group: "OK"}
        assert group not in {g["group_id"] for g in admin.list_groups()}
    finally:
        c.close()  # idempotent
        admin.close()
