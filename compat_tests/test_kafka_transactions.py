"""Kafka transactions with real clients (confluent-kafka/librdkafka, aiokafka): committed
records are visible to read_committed consumers and aborted ones are not; an open
transaction holds read_committed consumers at its first offset; offsets sent in a
transaction are committed with it; a second producer with the same transactional id
fences the first; a transaction left open past its timeout is aborted; and all of it
survives a restart."""
from __future__ import annotations

import time
import uuid

import pytest
from brokerproc import start_broker
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic


@pytest.fixture
def broker(tmp_path):
    b = start_broker(str(tmp_path / "data"))
    yield b
    b.stop()


def create(b, *topics, partitions=2):
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics([NewTopic(t, partitions) for t in topics]).values():
        f.result(20)


def producer(b, tid, **kw) -> Producer:
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": tid,
                  "linger.ms": 5, **kw})
    p.init_transactions(20)
    return p


def read_all(b, topic, isolation, partitions=2, group=None, timeout=20):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group or uuid.uuid4().hex,
                  "isolation.level": isolation, "enable.partition.eof": True,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out, eof = [], set()
        deadline = time.time() + timeout
        while len(eof) < partitions and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise AssertionError(m.error())
            out.append(m.value())
        assert len(eof) == partitions, f"no end of partitions after {len(out)} records"
        return sorted(out)
    finally:
        c.close()


def test_committed_visible_aborted_not(broker):
    create(broker, "tx")
    p = producer(broker, "tx-1")
    for batch, commit in (("a", True), ("b", False), ("c", True)):
        p.begin_transaction()
        for i in range(6):
            p.produce("tx", value=f"{batch}{i}".encode(), partition=i % 2)
        p.flush(10)  # (sent: an abort would drop what is still queued in the client)
        if commit:
            p.commit_transaction(20)
        else:
            p.abort_transaction(20)
    committed = sorted(f"{x}{i}".encode() for x in "ac" for i in range(6))
    assert read_all(broker, "tx", "read_committed") == committed
    everything = sorted(f"{x}{i}".encode() for x in "abc" for i in range(6))
    assert read_all(broker, "tx", "read_uncommitted") == everything
    # after a restart: markers, aborted transactions and state are all still there
    b2 = broker.restart()
    assert read_all(b2, "tx", "read_committed") == committed
    p = producer(b2, "tx-1")  # the same id again: a new epoch
    p.begin_transaction()
    p.produce("tx", value=b"d0", partition=0)
    p.commit_transaction(20)
    assert read_all(b2, "tx", "read_committed") == sorted(committed + [b"d0"])
    b2.stop()


def test_an_open_transaction_holds_read_committed_consumers(broker):
    create(broker, "open", partitions=1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("open", value=b"before")
    plain.flush(10)
    p = producer(broker, "tx-open")
    p.begin_transaction()
    p.produce("open", value=b"pending")
    p.flush(10)
    plain.produce("open", value=b"after")  # non-transactional, after the open one
    plain.flush(10)
    assert read_all(broker, "open", "read_committed", partitions=1) == [b"before"]
    assert read_all(broker, "open", "read_uncommitted", partitions=1) == sorted(
        [b"before", b"pending", b"after"])
    p.commit_transaction(20)
    assert read_all(broker, "open", "read_committed", partitions=1) == sorted(
        [b"before", b"pending", b"after"])


def test_offsets_commit_with_the_transaction(broker):
    create(broker, "in", "out", partitions=1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        plain.produce("in", value=b"%d" % i)
    plain.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "etl",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    c.subscribe(["in"])
    p = producer(broker, "etl-1")
    got = []
    deadline = time.time() + 30
    while len(got) < 10 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    assert len(got) == 10
    p.begin_transaction()
    for m in got[:6]:
        p.produce("out", value=m.value() + b"!")
    p.send_offsets_to_transaction([TopicPartition("in", 0, got[5].offset() + 1)],
                                  c.consumer_group_metadata(), 20)
    p.commit_transaction(20)
    p.begin_transaction()  # the rest is aborted: neither the output nor the offsets stay
    for m in got[6:]:
        p.produce("out", value=m.value() + b"!")
    p.flush(10)
    p.send_offsets_to_transaction([TopicPartition("in", 0, 10)],
                                  c.consumer_group_metadata(), 20)
    p.abort_transaction(20)
    assert c.committed([TopicPartition("in", 0)], 10)[0].offset == 6
    c.close()
    assert read_all(broker, "out", "read_committed", partitions=1) == sorted(
        b"%d!" % i for i in range(6))


def test_a_second_producer_fences_the_first(broker):
    create(broker, "fence", partitions=1)
    p1 = producer(broker, "tx-fence")
    p1.begin_transaction()
    p1.produce("fence", value=b"zombie")
    p1.flush(10)
    p2 = producer(broker, "tx-fence")  # aborts p1's transaction, bumps the epoch
    p2.begin_transaction()
    p2.produce("fence", value=b"live")
    p2.commit_transaction(20)
    with pytest.raises(KafkaException) as e:
        p1.produce("fence", value=b"late")
        p1.commit_transaction(10)
    assert e.value.args[0].fatal() or e.value.args[0].code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    assert read_all(broker, "fence", "read_committed", partitions=1) == [b"live"]


def test_a_transaction_open_past_its_timeout_is_aborted(broker):
    create(broker, "slow", partitions=1)
    p = producer(broker, "tx-slow", **{"transaction.timeout.ms": 1500})
    p.begin_transaction()
    p.produce("slow", value=b"never")
    p.flush(10)
    time.sleep(4)  # the broker aborts it (and fences this producer)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("slow", value=b"later")
    plain.flush(10)
    assert read_all(broker, "slow", "read_committed", partitions=1) == [b"later"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


async def test_aiokafka_transactions(broker):
    aiokafka = pytest.importorskip("aiokafka")
    create(broker, "aio", partitions=1)
    p = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap,
                                  transactional_id="aio-1")
    await p.start()
    try:
        async with p.transaction():
            await p.send_and_wait("aio", b"kept")
        await p.begin_transaction()
        await p.send_and_wait("aio", b"dropped")
        await p.abort_transaction()
    finally:
        await p.stop()
    c = aiokafka.AIOKafkaConsumer("aio", bootstrap_servers=broker.bootstrap,
                                  isolation_level="read_committed",
                                  auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    try:
        batch = await c.getmany(timeout_ms=5000)
        values = [m.value for msgs in batch.values() for m in msgs]
    finally:
        await c.stop()
    assert values == [b"kept"]


def test_kafka_python_transactions(broker):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition
    create(broker, "kp", partitions=1)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="kp-1")
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send("kp", b"kept")
        p.commit_transaction()
        p.begin_transaction()
        p.send("kp", b"dropped")
        p.flush()
        p.abort_transaction()
    finally:
        p.close()
    for isolation, expected in (("read_committed", [b"kept"]),
                                ("read_uncommitted", [b"dropped", b"kept"])):
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                          isolation_level=isolation, enable_auto_commit=False,
                          consumer_timeout_ms=3000)
        tp = KTopicPartition("kp", 0)
        c.assign([tp])
        c.seek(tp, 0)
        assert sorted(m.value for m in c) == expected, isolation
        c.close()


def test_sigkill_mid_transactions(tmp_path):
    """SIGKILL while a producer commits transactions in a loop: after the restart, a
    read_committed consumer sees every committed transaction whole and nothing of the
    others, and is not held back for good by the one that was open (its timeout aborts
    it)."""
    import signal
    import threading

    b = start_broker(str(tmp_path / "data"))
    try:
        create(b, "crash", partitions=2)
        committed: list[int] = []
        stop = threading.Event()

        def run():
            p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "crash-1",
                          "transaction.timeout.ms": 3000, "linger.ms": 2,
                          "message.timeout.ms": 3000})
            p.init_transactions(20)
            n = 0
            while not stop.is_set():
                try:
                    p.begin_transaction()
                    for i in range(4):
                        p.produce("crash", value=b"%d-%d" % (n, i), partition=i % 2)
                    p.commit_transaction(5)
                except KafkaException:
                    return  # the broker is gone: this transaction's outcome is open
                committed.append(n)
                n += 1

        t = threading.Thread(target=run)
        t.start()
        time.sleep(2.5)
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        stop.set()
        t.join(30)
        assert committed, "some transactions committed before the kill"
        b = start_broker(b.data_dir, extra=b.args)
        time.sleep(4.5)  # the open transaction's timeout (3 s) passes; the broker aborts it
        got = read_all(b, "crash", "read_committed", timeout=30)
        by_txn: dict[int, int] = {}
        for v in got:
            n = int(v.split(b"-")[0])
            by_txn[n] = by_txn.get(n, 0) + 1
        assert all(c == 4 for c in by_txn.values()), "whole transactions only"
        assert set(committed) <= set(by_txn), "every acknowledged commit survives"
        assert len(by_txn) <= len(committed) + 1  # (+ the one whose commit reply was lost)
        assert len(got) == len(set(got)), "exactly once"
    finally:
        b.stop()
