"""Group state survives a broker SIGKILL: committed offsets (with metadata), the group's
membership (its members keep their generation/epoch, no rebalance), and consumers resume
from the committed offsets."""
from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from test_groups_clients import (
    PARTITIONS,
    ConfluentMember,
    Ledger,
    group_members,
    make_topic,
    wait_for,
)
from test_groups_kip848 import kip848_member


def produce(bootstrap: str, topic: str, per_partition: int, counts: dict[int, int]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(per_partition * PARTITIONS):
        p.produce(topic, value=b"%d" % i, partition=i % PARTITIONS)
    assert p.flush(30) == 0
    for part in range(PARTITIONS):
        counts[part] = counts.get(part, 0) + per_partition


def consumed_up_to(ledger: Ledger, counts: dict[int, int]) -> bool:
    with ledger.lock:
        done = {(p, o) for k, _w, p, o in ledger.events if k == "k"}
    return all((p, n) in done for p, n in counts.items())


def committed(bootstrap: str, group: str, topic: str) -> list[tuple[int, str]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
        return [(tp.offset, tp.metadata) for tp in tps]
    finally:
        c.close()


def kill_and_restart(fresh_broker):
    b = fresh_broker[0]
    b.kill()
    b2 = b.restart()
    fresh_broker[0] = b2
    return b2


def test_sigkill_keeps_offsets_membership_and_resume_points(fresh_broker, topic_name):
    b = fresh_broker[0]
    make_topic(b.bootstrap, topic_name)
    counts: dict[int, int] = {}
    produce(b.bootstrap, topic_name, 5, counts)
    group, side = f"dur-{uuid.uuid4().hex[:8]}", f"side-{uuid.uuid4().hex[:8]}"
    ledger = Ledger()
    a = ConfluentMember("a", ledger, b.bootstrap, group, topic_name)
    a.start()
    try:
        wait_for(lambda: consumed_up_to(ledger, counts), 60, "a to commit everything")
        standalone = Consumer({"bootstrap.servers": b.bootstrap, "group.id": side})
        standalone.commit(offsets=[TopicPartition(topic_name, p, 100 + p, metadata=f"m{p}-✓")
                                   for p in range(PARTITIONS)], asynchronous=False)
        standalone.close()
        calls = ledger.assign_calls["a"]

        b = kill_and_restart(fresh_broker)

        assert committed(b.bootstrap, group, topic_name) == [(5, None)] * PARTITIONS  # no metadata
        assert committed(b.bootstrap, side, topic_name) == \
            [(100 + p, f"m{p}-✓") for p in range(PARTITIONS)]
        assert group_members(b.bootstrap, group) == ("STABLE", 1)
        time.sleep(3)  # a heartbeats with its old generation: accepted, no rebalance
        assert ledger.assign_calls["a"] == calls, "the group was rebalanced after restart"
        assert ledger.owned["a"] == set(range(PARTITIONS))
    finally:
        a.stop()
    produce(b.bootstrap, topic_name, 5, counts)
    b2 = ConfluentMember("b", ledger, b.bootstrap, group, topic_name)
    b2.start()
    try:
        wait_for(lambda: consumed_up_to(ledger, counts), 60, "b to consume the new records")
    finally:
        b2.stop()
    with ledger.lock:
        by_b = sorted((p, o) for k, w, p, o in ledger.events if k == "c" and w == "b")
    assert by_b == [(p, o) for p in range(PARTITIONS) for o in range(5, 10)], \
        "b did not resume exactly at the committed offsets"
    ledger.check(counts)


def test_sigkill_keeps_kip848_membership(fresh_broker, topic_name):
    b = fresh_broker[0]
    make_topic(b.bootstrap, topic_name)
    group = f"dur848-{uuid.uuid4().hex[:8]}"
    ledger = Ledger()
    members = [kip848_member(f"m{i}", ledger, b.bootstrap, group, topic_name)
               for i in range(2)]
    for m in members:
        m.start()
    try:
        wait_for(lambda: ledger.converged(["m0", "m1"]), 30, "two members to converge")
        time.sleep(1)
        before = {m: set(ledger.owned[m]) for m in ("m0", "m1")}
        calls = dict(ledger.assign_calls)
        b = kill_and_restart(fresh_broker)
        time.sleep(4)
        assert {m: ledger.owned[m] for m in ("m0", "m1")} == before
        assert ledger.assign_calls == calls, "members were reassigned after restart"
    finally:
        for m in members:
            m.stop()
    assert not ledger.violations, ledger.violations
