"""KIP-848 consumer groups (`group.protocol=consumer`) with confluent-kafka: the broker
assigns; members converge, and a member leaving hands its partitions over."""
from __future__ import annotations

import time
import uuid

import pytest
from test_groups_bad_input import Wire
from test_groups_clients import (
    ConfluentMember,
    Feeder,
    Ledger,
    committed_offsets,
    make_topic,
    wait_for,
)

from broker.protocol.messages.consumer_group_describe_request import (
    ConsumerGroupDescribeRequest,
)


def kip848_member(name, ledger, bootstrap, group, topic, assignor=None):
    m = ConfluentMember(name, ledger, bootstrap, group, topic, {"group.protocol": "consumer"})
    # session and heartbeat settings are the broker's under KIP-848
    m.conf.pop("session.timeout.ms")
    m.conf.pop("heartbeat.interval.ms")
    if assignor:
        m.conf["group.remote.assignor"] = assignor
    return m


@pytest.mark.parametrize("assignor", ["uniform", "range"])
def test_three_members_converge_and_hand_over(broker, topic_name, assignor):
    make_topic(broker.bootstrap, topic_name)
    group = f"k848-{assignor}-{uuid.uuid4().hex[:8]}"
    ledger = Ledger()
    feeder = Feeder(broker.bootstrap, topic_name)
    feeder.start()
    members = []
    try:
        for i in range(3):
            m = kip848_member(f"m{i}", ledger, broker.bootstrap, group, topic_name, assignor)
            m.start()
            members.append(m)
            wait_for(lambda: ledger.converged([x.name for x in members]), 30,
                     f"{len(members)} members to share the partitions")
        assert sorted(len(ledger.owned[m.name]) for m in members) == [2, 2, 2]
        members.pop(1).stop()  # a member leaving (epoch -1) triggers reassignment
        wait_for(lambda: ledger.converged([x.name for x in members]), 30,
                 "the partitions to be reassigned")
        produced = feeder.stop()
        wait_for(lambda: all(
            any(k == "c" and p == part and o == n - 1 for k, _w, p, o in list(ledger.events))
            for part, n in produced.items() if n), 30, "the last records")
        for m in members:
            m.stop()
        members.clear()
        ledger.check(produced)
        assert committed_offsets(broker.bootstrap, group, topic_name) == produced
    finally:
        feeder.stopping.set()
        for m in members:
            m.stopping.set()


def test_regex_subscription(broker, topic_name):
    make_topic(broker.bootstrap, topic_name)
    group = f"k848-re-{uuid.uuid4().hex[:8]}"
    ledger = Ledger()
    m = kip848_member("m", ledger, broker.bootstrap, group, "^" + topic_name + "$")
    m.start()
    try:
        wait_for(lambda: ledger.converged(["m"]), 30, "the regex member to own everything")
        w = Wire(broker.bootstrap)
        try:
            d = w.call(69, 0, ConsumerGroupDescribeRequest(group_ids=[group])).groups[0]
        finally:
            w.close()
        assert d.error_code == 0 and d.group_state == "Stable"
        [member] = d.members
        # librdkafka sends the union of its patterns, each in parentheses
        assert member.subscribed_topic_regex == "(^" + topic_name + "$)"
        assert member.assignment.topic_partitions[0].topic_name == topic_name
    finally:
        m.stop()


def test_static_member_restarts_without_reassignment(broker, topic_name):
    make_topic(broker.bootstrap, topic_name)
    group = f"k848-static-{uuid.uuid4().hex[:8]}"
    ledger = Ledger()

    def member(name, instance):
        m = kip848_member(name, ledger, broker.bootstrap, group, topic_name)
        m.conf["group.instance.id"] = instance
        return m

    a, b = member("a", "inst-a"), member("b", "inst-b")
    a.start()
    b.start()
    try:
        wait_for(lambda: ledger.converged(["a", "b"]), 30, "a and b to converge")
        time.sleep(1)
        b_calls, a_parts = ledger.assign_calls["b"], set(ledger.owned["a"])
        a.stop()  # epoch -2: a static member leaving for a while keeps its partitions
        a2 = member("a2", "inst-a")
        a2.start()
        wait_for(lambda: ledger.converged(["a2", "b"]), 30, "a2 to take a's place")
        time.sleep(2)
        assert ledger.owned["a2"] == a_parts
        assert ledger.assign_calls["b"] == b_calls, "b was reassigned"
        a2.stop()
    finally:
        b.stop()
    assert not ledger.violations, ledger.violations
