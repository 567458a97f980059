"""Moving partitions between the brokers of a cluster (docs/decisions/0021) with
kafka-python's AlterPartitionReassignments and ListPartitionReassignments, three broker
processes: every partition moves to the next broker while an idempotent producer keeps
going, and every acked record is read back exactly once, offsets contiguous; the replica
list asked for is what Metadata reports; the refusals have Kafka's error codes; a moved
partition moves back."""
from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from kafka import KafkaAdminClient
from kafka import TopicPartition as KTP
from kafka.errors import (
    InvalidReplicationAssignmentError,
    NoReassignmentInProgressError,
    UnknownTopicOrPartitionError,
)
from test_cluster import cluster, create  # noqa: F401 (a fixture)


def admin(c) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=c.bootstrap.split(","),
                            request_timeout_ms=30000)


def produce_while(c, topic: str, acked: list, stop_after: float, start: int) -> int:
    p = Producer({"bootstrap.servers": c.bootstrap, "enable.idempotence": True,
                  "message.timeout.ms": 60000, "linger.ms": 5})
    errors = []

    def done(err, m):
        if err is not None:
            errors.append(err)
        else:
            acked.append((m.partition(), m.offset(), m.value()))
    i = start
    deadline = time.monotonic() + stop_after
    while time.monotonic() < deadline:
        p.produce(topic, value=f"v{i}".encode(), partition=i % 3, on_delivery=done)
        p.poll(0)
        i += 1
        time.sleep(0.002)
    assert p.flush(60) == 0 and not errors, errors
    return i


def read_back(c, topic: str, want: int) -> list:
    cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    cons.assign([TopicPartition(topic, p, 0) for p in range(3)])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < want and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.partition(), m.offset(), m.value()))
    cons.close()
    return got


def test_partitions_move_between_brokers_while_producing(cluster):  # noqa: F811
    c = cluster
    topic = f"cl-mv-{uuid.uuid4().hex[:6]}"
    create(c, topic, 3)
    before = c.leaders(topic)
    assert sorted(before.values()) == [0, 1, 2]
    acked: list = []
    n = produce_while(c, topic, acked, 1.0, 0)
    moved = {p: (leader + 1) % 3 for p, leader in before.items()}
    a = admin(c)
    bg = threading.Thread(target=produce_while, args=(c, topic, acked, 4.0, n))
    bg.start()
    time.sleep(0.5)
    res = a.alter_partition_reassignments({KTP(topic, p): [t] for p, t in moved.items()})
    assert res == {KTP(topic, p): None for p in moved}, res
    assert a.list_partition_reassignments() == {}, "done when answered"
    bg.join()
    c.wait_for(lambda: c.leaders(topic) == moved)
    got = read_back(c, topic, len(acked))
    assert sorted(got) == sorted(acked)
    for p in range(3):
        offsets = sorted(o for q, o, _ in got if q == p)
        assert offsets == list(range(len(offsets))), (p, offsets[:5])
    # back where they were, with a three-broker replica list for one of them
    lists = {p: [t] for p, t in before.items()}
    lists[0] = [before[0], *sorted({0, 1, 2} - {before[0]})]
    res = a.alter_partition_reassignments({KTP(topic, p): r for p, r in lists.items()})
    assert res == {KTP(topic, p): None for p in lists}, res
    c.wait_for(lambda: c.leaders(topic) == before)
    md = c.admin.list_topics(topic, timeout=10).topics[topic].partitions
    assert md[0].replicas == lists[0] and sorted(md[0].isrs) == [0, 1, 2]
    assert md[1].replicas == [before[1]]
    more: list = []
    produce_while(c, topic, more, 0.5, 10**6)
    assert sorted(read_back(c, topic, len(acked) + len(more))) == sorted(acked + more)
    a.close()


def test_reassignments_are_refused_with_kafkas_codes(cluster):  # noqa: F811
    c = cluster
    topic = f"cl-mvx-{uuid.uuid4().hex[:6]}"
    create(c, topic, 3)
    a = admin(c)
    res = a.alter_partition_reassignments({
        KTP(topic, 0): [9], KTP(topic, 1): [1, 1], KTP(topic, 7): [0],
        KTP(topic, 2): None})
    assert res == {KTP(topic, 0): InvalidReplicationAssignmentError,
                   KTP(topic, 1): InvalidReplicationAssignmentError,
                   KTP(topic, 7): UnknownTopicOrPartitionError,
                   KTP(topic, 2): NoReassignmentInProgressError}, res
    assert a.list_partition_reassignments() == {}
    a.close()


def test_a_replication_factor_is_reported_with_the_live_brokers_in_sync(cluster):  # noqa: F811
    c = cluster
    topic = f"cl-rf-{uuid.uuid4().hex[:6]}"
    for f in c.admin.create_topics([NewTopic(topic, 3, 3)]).values():
        f.result()
    md = c.admin.list_topics(topic, timeout=10).topics[topic].partitions
    for m in md.values():
        assert len(m.replicas) == 3 and m.replicas[0] == m.leader, m
        assert sorted(m.isrs) == [0, 1, 2]
    victim = md[0].leader
    c.brokers[victim].kill()

    def taken_over():
        now = c.admin.list_topics(topic, timeout=10).topics[topic].partitions
        return all(m.leader not in (-1, victim) and victim not in m.isrs and
                   len(m.replicas) == 3 for m in now.values())
    c.wait_for(taken_over)
    c.restart(victim)
    c.wait_for(lambda: c.leaders(topic) == {p: m.leader for p, m in md.items()})
