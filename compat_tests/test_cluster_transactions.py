"""Kafka transactions in a cluster of three broker processes (docs/decisions/0020): a
librdkafka transactional producer writes to partitions led by every broker, so its
coordinator reaches the other leaders with WriteTxnMarkers; committed records are seen at
read_committed and aborted ones are not (read_uncommitted sees both); offsets sent with a
transaction reach the group only on commit; the coordinator killed with SIGKILL in the
middle of a transaction is replaced by the broker that adopts its channel, and the
transaction commits with nothing lost, then the next one after the broker returns."""
from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from test_cluster import JOURNAL_KEYS, cluster, create  # noqa: F401 (a fixture)


def txn_producer(c, tid: str) -> Producer:
    p = Producer({"bootstrap.servers": c.bootstrap, "transactional.id": tid,
                  "message.timeout.ms": 60000, "transaction.timeout.ms": 60000})
    p.init_transactions(30)
    return p


def send(p: Producer, topic: str, values: list[bytes], partitions: int = 6) -> None:
    errors = []
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % partitions,
                  on_delivery=lambda err, m: err and errors.append(err))
    assert p.flush(60) == 0 and not errors, errors


def read_all(c, topic: str, isolation: str, want: int, partitions: int = 6) -> list[bytes]:
    cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "isolation.level": isolation})
    cons.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < want and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    extra = cons.poll(2.0)
    cons.close()
    assert extra is None or extra.error() is not None, extra.value()
    return got


def test_a_transaction_spans_every_broker(cluster):  # noqa: F811
    c = cluster
    topic = f"cl-tx-{uuid.uuid4().hex[:6]}"
    create(c, topic)
    assert set(c.leaders(topic).values()) == {0, 1, 2}
    p = txn_producer(c, f"cl-tx-{uuid.uuid4().hex[:6]}")
    committed = [f"c{i}".encode() for i in range(60)]
    aborted = [f"a{i}".encode() for i in range(60)]
    p.begin_transaction()
    send(p, topic, committed)
    p.commit_transaction(30)
    p.begin_transaction()
    send(p, topic, aborted)
    p.abort_transaction(30)
    assert sorted(read_all(c, topic, "read_committed", 60)) == sorted(committed)
    assert sorted(read_all(c, topic, "read_uncommitted", 120)) == sorted(committed + aborted)


def test_offsets_sent_with_a_transaction_commit_with_it(cluster):  # noqa: F811
    c = cluster
    src, dst = f"cl-in-{uuid.uuid4().hex[:6]}", f"cl-out-{uuid.uuid4().hex[:6]}"
    create(c, src, 3)
    create(c, dst, 3)
    plain = Producer({"bootstrap.servers": c.bootstrap})
    for i in range(30):
        plain.produce(src, value=f"in{i}".encode(), partition=i % 3)
    assert plain.flush(30) == 0
    group = f"cl-eos-{uuid.uuid4().hex[:6]}"
    cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "isolation.level": "read_committed"})
    cons.subscribe([src])
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < 30 and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            seen.append(m)
    assert len(seen) == 30
    p = txn_producer(c, f"cl-eos-{uuid.uuid4().hex[:6]}")
    positions = cons.position(cons.assignment())
    for commit in (False, True):  # the aborted attempt first: its offsets must not land
        p.begin_transaction()
        send(p, dst, [m.value().replace(b"in", b"out") for m in seen], 3)
        p.send_offsets_to_transaction(positions, cons.consumer_group_metadata(), 30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
            got = cons.committed([TopicPartition(src, i) for i in range(3)], 10)
            assert all(tp.offset < 0 for tp in got), got
    got = cons.committed([TopicPartition(src, i) for i in range(3)], 10)
    assert sum(tp.offset for tp in got) == 30, got
    cons.close()
    out = read_all(c, dst, "read_committed", 30, 3)
    assert sorted(out) == sorted(m.value().replace(b"in", b"out") for m in seen)


def test_the_coordinator_dies_in_the_middle_of_a_transaction(cluster):  # noqa: F811
    c = cluster
    topic = f"cl-txk-{uuid.uuid4().hex[:6]}"
    create(c, topic)
    tid = f"cl-txk-{uuid.uuid4().hex[:6]}"
    p = txn_producer(c, tid)
    victim = c.coordinator(tid, 1)
    first = [f"x{i}".encode() for i in range(60)]
    p.begin_transaction()
    send(p, topic, first)
    c.brokers[victim].kill()
    p.commit_transaction(60)  # to the broker that adopted the coordinator's channel
    assert sorted(read_all(c, topic, "read_committed", 60)) == sorted(first)
    c.restart(victim)
    c.wait_for(lambda: len(c.admin.list_topics(timeout=10).brokers) == 3)
    c.wait_for(lambda: set(c.leaders(topic).values()) == {0, 1, 2})
    second = [f"y{i}".encode() for i in range(60)]
    p.begin_transaction()
    send(p, topic, second)
    p.commit_transaction(60)
    p.begin_transaction()
    send(p, topic, [b"gone"] * 6)
    p.abort_transaction(60)
    assert sorted(read_all(c, topic, "read_committed", 120)) == sorted(first + second)


def test_transactions_commit_on_every_coordinator(cluster):  # noqa: F811
    """Coordinators are spread over the brokers (the group journal, balanced): a
    transaction coordinated by each one commits."""
    c = cluster
    coords = c.coordinators()
    topic = f"cl-txc-{uuid.uuid4().hex[:6]}"
    create(c, topic)
    want = []
    for node in (0, 1, 2):
        tid = JOURNAL_KEYS[min(i for i, n in coords.items() if n == node)]
        assert c.coordinator(tid, 1) == node
        p = txn_producer(c, tid)
        values = [f"{node}-{i}".encode() for i in range(12)]
        p.begin_transaction()
        send(p, topic, values)
        p.commit_transaction(30)
        want += values
    assert sorted(read_all(c, topic, "read_committed", len(want))) == sorted(want)


def test_a_partition_leader_dies_before_the_commit(cluster):  # noqa: F811
    """The coordinator cannot reach one leader for its marker until another broker adopts
    that leader's log: the commit is decided, its markers wait, and then every committed
    record is readable."""
    c = cluster
    topic = f"cl-txl-{uuid.uuid4().hex[:6]}"
    create(c, topic)
    tid = f"cl-txl-{uuid.uuid4().hex[:6]}"
    p = txn_producer(c, tid)
    coordinator = c.coordinator(tid, 1)
    victim = next(n for n in (0, 1, 2) if n != coordinator)
    values = [f"z{i}".encode() for i in range(60)]
    p.begin_transaction()
    send(p, topic, values)
    c.brokers[victim].kill()
    p.commit_transaction(60)
    assert sorted(read_all(c, topic, "read_committed", 60)) == sorted(values)
    c.restart(victim)
    c.wait_for(lambda: set(c.leaders(topic).values()) == {0, 1, 2})
