"""Classic consumer groups with real clients: confluent-kafka (librdkafka), kafka-python and
aiokafka. Members run in threads; a ledger records what each owns, consumes and commits,
and checks that no partition is ever owned twice and no record is consumed again once an
offset past it was committed."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

PARTITIONS = 6
FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def wait_for(cond, timeout: float, what: str, interval: float = 0.05) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - t0


class Ledger:
    """Ownership and consumption as the members report them (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owned: dict[str, set[int]] = {}
        self.violations: list[str] = []
        self.events: list[tuple] = []
        self.assign_calls: dict[str, int] = {}

    def assigned(self, who: str, parts) -> None:
        with self.lock:
            self.assign_calls[who] = self.assign_calls.get(who, 0) + 1
            for p in parts:
                for other, mine in self.owned.items():
                    if other != who and p in mine:
                        self.violations.append(f"{who} got partition {p} owned by {other}")
            self.owned.setdefault(who, set()).update(parts)

    def revoked(self, who: str, parts) -> None:
        with self.lock:
            self.owned.setdefault(who, set()).difference_update(parts)

    def consumed(self, who: str, p: int, o: int) -> None:
        with self.lock:
            self.events.append(("c", who, p, o))

    def committed(self, who: str, p: int, nxt: int) -> None:
        with self.lock:
            self.events.append(("k", who, p, nxt))

    def converged(self, active: list[str]) -> bool:
        with self.lock:
            sets = [self.owned.get(a, set()) for a in active]
            others = [s for who, s in self.owned.items() if who not in active and s]
            union = set().union(*sets)
            return (not others and all(sets) and union == set(range(PARTITIONS))
                    and sum(map(len, sets)) == PARTITIONS)

    def check(self, produced: dict[int, int]) -> None:
        assert not self.violations, self.violations
        committed: dict[int, int] = {}
        seen: set[tuple[int, int]] = set()
        for kind, who, p, o in self.events:
            if kind == "k":
                committed[p] = max(committed.get(p, 0), o)
            else:
                if (p, o) in seen:
                    assert o >= committed.get(p, 0), \
                        f"{who} consumed {p}@{o} again after offset {committed[p]} was committed"
                seen.add((p, o))
        missing = {(p, o) for p, n in produced.items() for o in range(n)} - seen
        assert not missing, f"{len(missing)} records never consumed, e.g. {sorted(missing)[:5]}"


class Member(threading.Thread):
    """A consumer polling in its own thread until stopped (or paused: no polls)."""

    def __init__(self, name: str, ledger: Ledger) -> None:
        super().__init__(name=name, daemon=True)
        self.ledger = ledger
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self.error: BaseException | None = None

    def stop(self, timeout: float = 30) -> None:
        self.stopping.set()
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not stop"
        assert self.error is None, f"{self.name} failed: {self.error!r}"

    def run(self) -> None:
        try:
            self.consume()
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e


class ConfluentMember(Member):
    def __init__(self, name, ledger, bootstrap, group, topic, conf=None) -> None:
        super().__init__(name, ledger)
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest", **FAST,
                     **(conf or {})}
        self.topic = topic

    def consume(self) -> None:
        c = Consumer(self.conf)
        name, ledger = self.name, self.ledger
        # A commit refused while the group rebalances (REBALANCE_IN_PROGRESS, as Kafka
        # answers in CompletingRebalance) is tried again, as an application would, unless
        # the partition was revoked meanwhile (its new owner commits from then on).
        unsent: dict = {}

        def revoked(ps) -> None:
            for p in ps:
                unsent.pop(p.partition, None)
            ledger.revoked(name, {p.partition for p in ps})

        c.subscribe([self.topic],
                    on_assign=lambda _c, ps: ledger.assigned(name, {p.partition for p in ps}),
                    on_revoke=lambda _c, ps: revoked(ps), on_lost=lambda _c, ps: revoked(ps))
        try:
            while not self.stopping.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                m = c.poll(0.2)
                if m is not None and not m.error():
                    ledger.consumed(name, m.partition(), m.offset())
                    unsent[m.partition()] = m
                for p, last in list(unsent.items()):
                    try:
                        c.commit(message=last, asynchronous=False)
                    except KafkaException:
                        continue
                    ledger.committed(name, p, last.offset() + 1)
                    if unsent.get(p) is last:
                        del unsent[p]
        finally:
            c.close()
            ledger.revoked(name, set(range(PARTITIONS)))


class KafkaPythonMember(Member):
    def __init__(self, name, ledger, bootstrap, group, topic, assignor) -> None:
        super().__init__(name, ledger)
        self.args = (bootstrap, group, topic, assignor)

    def consume(self) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata
        bootstrap, group, topic, assignor = self.args
        name, ledger = self.name, self.ledger

        unsent: dict = {}  # a refused commit is tried again (see ConfluentMember)

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                for tp in revoked:
                    unsent.pop(tp, None)
                ledger.revoked(name, {tp.partition for tp in revoked})

            def on_partitions_assigned(self, assigned):
                ledger.assigned(name, {tp.partition for tp in assigned})

        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                          enable_auto_commit=False, auto_offset_reset="earliest",
                          session_timeout_ms=6000, heartbeat_interval_ms=500,
                          max_poll_records=10, partition_assignment_strategy=[assignor])
        c.subscribe([topic], listener=Listener())
        try:
            while not self.stopping.is_set():
                for tp, msgs in c.poll(timeout_ms=200).items():
                    for m in msgs:
                        ledger.consumed(name, tp.partition, m.offset)
                        unsent.pop(tp, None)
                        try:
                            c.commit({tp: OffsetAndMetadata(m.offset + 1, "", -1)})
                        except KafkaError:
                            unsent[tp] = m.offset + 1
                            break
                        ledger.committed(name, tp.partition, m.offset + 1)
                for tp, nxt in list(unsent.items()):
                    try:
                        c.commit({tp: OffsetAndMetadata(nxt, "", -1)})
                    except KafkaError:
                        continue
                    ledger.committed(name, tp.partition, nxt)
                    if unsent.get(tp) == nxt:
                        del unsent[tp]
        finally:
            c.close()
            ledger.revoked(name, set(range(PARTITIONS)))


class AioKafkaMember(Member):
    def __init__(self, name, ledger, bootstrap, group, topic, assignor) -> None:
        super().__init__(name, ledger)
        self.args = (bootstrap, group, topic, assignor)

    def consume(self) -> None:
        asyncio.run(self._consume())

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
        from aiokafka.errors import KafkaError
        bootstrap, group, topic, assignor = self.args
        name, ledger = self.name, self.ledger

        unsent: dict = {}  # a refused commit is tried again (see ConfluentMember)

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                for tp in revoked:
                    unsent.pop(tp, None)
                ledger.revoked(name, {tp.partition for tp in revoked})

            def on_partitions_assigned(self, assigned):
                ledger.assigned(name, {tp.partition for tp in assigned})

        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=500,
                             partition_assignment_strategy=(assignor,))
        c.subscribe([topic], listener=Listener())
        await c.start()
        try:
            while not self.stopping.is_set():
                batches = await c.getmany(timeout_ms=200, max_records=10)
                for tp, msgs in batches.items():
                    for m in msgs:
                        ledger.consumed(name, tp.partition, m.offset)
                        unsent.pop(tp, None)
                        try:
                            await c.commit({tp: m.offset + 1})
                        except KafkaError:
                            unsent[tp] = m.offset + 1
                            break
                        ledger.committed(name, tp.partition, m.offset + 1)
                for tp, nxt in list(unsent.items()):
                    try:
                        await c.commit({tp: nxt})
                    except KafkaError:
                        continue
                    ledger.committed(name, tp.partition, nxt)
                    if unsent.get(tp) == nxt:
                        del unsent[tp]
        finally:
            await c.stop()
            ledger.revoked(name, set(range(PARTITIONS)))


class Feeder(threading.Thread):
    """Produces to every partition in turn until stopped; counts acked records."""

    def __init__(self, bootstrap: str, topic: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        self.topic, self.interval = topic, interval
        self.stopping = threading.Event()
        self.acked: dict[int, int] = dict.fromkeys(range(PARTITIONS), 0)

    def _ack(self, err, msg) -> None:
        assert err is None, err
        self.acked[msg.partition()] += 1

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            self.p.produce(self.topic, value=b"%d" % i, partition=i % PARTITIONS,
                           on_delivery=self._ack)
            self.p.poll(0)
            i += 1
            time.sleep(self.interval)
        assert self.p.flush(30) == 0

    def stop(self) -> dict[int, int]:
        self.stopping.set()
        self.join(60)
        return dict(self.acked)


def make_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def join_and_leave_one_by_one(broker, topic, group, make_member, settle: float = 60) -> None:
    make_topic(broker.bootstrap, topic)
    ledger = Ledger()
    feeder = Feeder(broker.bootstrap, topic)
    feeder.start()
    members = []
    try:
        for i in range(3):
            m = make_member(f"m{i}", ledger)
            m.start()
            members.append(m)
            wait_for(lambda: ledger.converged([x.name for x in members]), settle,
                     f"{len(members)} members to share the partitions")
        while len(members) > 1:
            members.pop().stop()
            wait_for(lambda: ledger.converged([x.name for x in members]), settle,
                     f"{len(members)} members to share the partitions")
        produced = feeder.stop()
        last = members[0]
        wait_for(lambda: _all_consumed(ledger, produced) and _all_committed(ledger, produced),
                 30, "the last records and their commits")
        last.stop()
        members.clear()
        ledger.check(produced)
        assert committed_offsets(broker.bootstrap, group, topic) == produced
    finally:
        feeder.stopping.set()
        for m in members:
            m.stopping.set()


def _all_consumed(ledger: Ledger, produced: dict[int, int]) -> bool:
    with ledger.lock:
        seen = {(p, o) for k, _w, p, o in ledger.events if k == "c"}
    return all((p, n - 1) in seen for p, n in produced.items() if n)


def _all_committed(ledger: Ledger, produced: dict[int, int]) -> bool:
    with ledger.lock:
        done = {(p, o) for k, _w, p, o in ledger.events if k == "k"}
    return all((p, n) in done for p, n in produced.items() if n)


# ----------------------------------------------------------------------- tests

def poll_offsets(consumers, want: int, timeout: float = 30) -> list[int]:
    """Poll every consumer (each must be polled for its rebalances to run) until the first
    one has returned `want` records; their offsets."""
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} records"
        for c in consumers:
            m = c.poll(0.1)
            if c is consumers[0] and m is not None and not m.error():
                got.append(m.offset())
    return got


def group_members(bootstrap: str, group: str) -> tuple[str, int]:
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    d = admin.describe_consumer_groups([group])[group].result(10)
    return str(d.state).rsplit(".", 1)[-1], len(d.members)


def test_one_member_lifecycle_and_takeover_after_leave(broker, topic_name):
    make_topic(broker.bootstrap, topic_name, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        p.produce(topic_name, value=b"%d" % i)
    assert p.flush(20) == 0
    group = f"life-{uuid.uuid4().hex[:8]}"
    conf = {"bootstrap.servers": broker.bootstrap, "group.id": group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest", **FAST}
    a = Consumer(conf)
    a.subscribe([topic_name])
    got = poll_offsets([a], 5)
    assert got == [0, 1, 2, 3, 4]
    a.commit(offsets=[TopicPartition(topic_name, 0, 5, metadata="resume-here")],
             asynchronous=False)
    [c] = a.committed([TopicPartition(topic_name, 0)], timeout=10)
    assert (c.offset, c.metadata) == (5, "resume-here")
    b = Consumer(conf)
    b.subscribe([topic_name])
    deadline = time.monotonic() + 30
    while group_members(broker.bootstrap, group) != ("STABLE", 2) or \
            len(a.assignment()) + len(b.assignment()) != 1:
        assert time.monotonic() < deadline, "b did not join"
        a.poll(0.1)
        b.poll(0.1)
    owner, other = (a, b) if a.assignment() else (b, a)
    owner.close()  # LeaveGroup: the other takes over at once, not after a session timeout
    t0 = time.monotonic()
    first = poll_offsets([other], 1)
    took = time.monotonic() - t0
    assert took < 5, f"takeover took {took:.1f}s"
    assert first == [5], "the new owner did not resume from the committed offset"
    other.close()
    assert group_members(broker.bootstrap, group) == ("EMPTY", 0)


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_confluent_three_members(broker, topic_name, strategy):
    group = f"cf-{strategy}-{uuid.uuid4().hex[:8]}"
    join_and_leave_one_by_one(broker, topic_name, group, lambda name, ledger: ConfluentMember(
        name, ledger, broker.bootstrap, group, topic_name,
        {"partition.assignment.strategy": strategy}))


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "sticky", "cooperative_sticky"])
def test_kafka_python_three_members(broker, topic_name, assignor):
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    cls = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
           "sticky": StickyPartitionAssignor,
           "cooperative_sticky": CooperativeStickyAssignor}[assignor]
    group = f"kp-{assignor}-{uuid.uuid4().hex[:8]}"
    join_and_leave_one_by_one(broker, topic_name, group, lambda name, ledger: KafkaPythonMember(
        name, ledger, broker.bootstrap, group, topic_name, cls))


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "sticky"])
def test_aiokafka_three_members(broker, topic_name, assignor):
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    cls = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
           "sticky": StickyPartitionAssignor}[assignor]
    group = f"aio-{assignor}-{uuid.uuid4().hex[:8]}"
    join_and_leave_one_by_one(broker, topic_name, group, lambda name, ledger: AioKafkaMember(
        name, ledger, broker.bootstrap, group, topic_name, cls))


def test_static_member_restarts_without_rebalance(broker, topic_name):
    make_topic(broker.bootstrap, topic_name)
    group = f"static-{uuid.uuid4().hex[:8]}"
    ledger = Ledger()

    def member(name, instance):
        return ConfluentMember(name, ledger, broker.bootstrap, group, topic_name,
                               {"group.instance.id": instance})

    a, b = member("a", "inst-a"), member("b", "inst-b")
    a.start()
    b.start()
    wait_for(lambda: ledger.converged(["a", "b"]), 60, "a and b to share the partitions")
    time.sleep(1)
    b_calls, a_parts = ledger.assign_calls["b"], set(ledger.owned["a"])
    a.stop()  # a static member's close sends no LeaveGroup
    a2 = member("a2", "inst-a")
    a2.start()
    wait_for(lambda: ledger.converged(["a2", "b"]), 30, "a2 to take a's place")
    time.sleep(2)
    assert ledger.owned["a2"] == a_parts
    assert ledger.assign_calls["b"] == b_calls, "b was rebalanced"
    a2.stop()
    b.stop()
    assert not ledger.violations, ledger.violations


def test_session_timeout_evicts_a_silent_member_once(broker, topic_name):
    make_topic(broker.bootstrap, topic_name)
    group = f"sess-{uuid.uuid4().hex[:8]}"
    ledger = Ledger()
    a = ConfluentMember("a", ledger, broker.bootstrap, group, topic_name)
    a.start()
    wait_for(lambda: ledger.converged(["a"]), 30, "a to own everything")
    # b joins from a raw connection, then goes silent: only its session timeout removes it
    from test_groups_bad_input import Wire, consumer_meta, join
    w = Wire(broker.bootstrap, timeout=30)
    try:
        r = join(w, group, protocols=(("range", consumer_meta(topic_name)),), session=6000)
        r = join(w, group, r.member_id, protocols=(("range", consumer_meta(topic_name)),),
                 session=6000)
        assert r.error_code == 0
        wait_for(lambda: 0 < len(ledger.owned["a"]) < PARTITIONS, 15,
                 "a to share with b")
        calls = ledger.assign_calls["a"]
        t = wait_for(lambda: ledger.converged(["a"]), 30, "a to get everything back")
    finally:
        w.close()
    assert 3 < t < 20, f"eviction after {t:.1f}s"
    time.sleep(1.5)
    assert ledger.assign_calls["a"] == calls + 1, "reassigned more than once"
    a.stop()


def test_max_poll_interval_expiry_reassigns(broker, topic_name):
    make_topic(broker.bootstrap, topic_name)
    group = f"poll-{uuid.uuid4().hex[:8]}"
    ledger = Ledger()
    a = ConfluentMember("a", ledger, broker.bootstrap, group, topic_name)
    b = ConfluentMember("b", ledger, broker.bootstrap, group, topic_name,
                        {"max.poll.interval.ms": 6000})
    a.start()
    b.start()
    wait_for(lambda: ledger.converged(["a", "b"]), 60, "a and b to share the partitions")
    calls = ledger.assign_calls["a"]
    b.paused.set()  # b's application stops polling; librdkafka leaves the group for it
    t = wait_for(lambda: ledger.assign_calls["a"] > calls and
                 ledger.owned["a"] == set(range(PARTITIONS)), 40, "a to take over")
    assert t > 4, f"reassigned after {t:.1f}s, before max.poll.interval.ms"
    time.sleep(2)
    assert ledger.assign_calls["a"] == calls + 1, "reassigned more than once"
    b.paused.clear()
    b.stop()
    a.stop()


@pytest.mark.parametrize("api_version", [(0, 11), (1, 0), (2, 0), (2, 3)])
def test_kafka_python_old_protocol_versions(broker, topic_name, api_version):
    """Old clients send old versions (JoinGroup v2-v5, OffsetCommit v3-v7, ...)."""
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as TP
    make_topic(broker.bootstrap, topic_name, 2)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        p.produce(topic_name, value=b"%d" % i, partition=i % 2)
    assert p.flush(20) == 0
    group = f"old-{uuid.uuid4().hex[:8]}"

    def consumer():
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                          api_version=api_version, enable_auto_commit=False,
                          auto_offset_reset="earliest", session_timeout_ms=6000,
                          heartbeat_interval_ms=500)
        c.subscribe([topic_name])
        return c

    c = consumer()
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 20:
        assert time.monotonic() < deadline, f"only {len(got)} records"
        for tp, msgs in c.poll(timeout_ms=200).items():
            got += [(tp.partition, m.offset) for m in msgs]
    assert sorted(got) == [(p, o) for p in range(2) for o in range(10)]
    c.commit({TP(topic_name, 0): OffsetAndMetadata(4, "old-meta", -1),
              TP(topic_name, 1): OffsetAndMetadata(7, "", -1)})
    assert c.committed(TP(topic_name, 0)) == 4
    c.close()
    c = consumer()  # a new member resumes where the group committed
    again = []
    deadline = time.monotonic() + 30
    while len(again) < 9:
        assert time.monotonic() < deadline, f"only {len(again)} records after restart"
        for tp, msgs in c.poll(timeout_ms=200).items():
            again += [(tp.partition, m.offset) for m in msgs]
    c.close()
    assert sorted(again) == [(0, o) for o in range(4, 10)] + [(1, o) for o in range(7, 10)]
