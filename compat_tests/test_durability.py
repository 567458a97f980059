"""Durability with real processes: what a Kafka client saw acknowledged survives SIGTERM
and SIGKILL of the broker, exactly once, in order."""
import random
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def consume_all(bootstrap, topic, partitions=1, timeout=60):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "durability",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.time() + timeout
    while len(eof) < partitions and time.time() < deadline:
        m = c.poll(1)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
                continue
            raise AssertionError(m.error())
        out.append((m.partition(), m.offset(), m.value()))
    c.close()
    assert len(eof) == partitions, "did not reach the end of every partition"
    return out


def test_sigterm_restart_keeps_everything(fresh_broker, topic_name):
    b = fresh_broker[0]
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 2})
    for i in range(2000):
        p.produce(topic_name, value=b"%06d" % i)
    assert p.flush(30) == 0
    assert b.stop() == 0, "clean exit on SIGTERM"
    b2 = b.restart()
    fresh_broker.append(b2)
    got = consume_all(b2.bootstrap, topic_name)
    assert [v for _, _, v in got] == [b"%06d" % i for i in range(2000)]
    assert [o for _, o, _ in got] == list(range(2000))


def test_sigkill_loses_no_acknowledged_record(fresh_broker, topic_name):
    rng = random.Random(11)
    b = fresh_broker[0]
    acked: dict[bytes, tuple[int, int]] = {}
    for round_no in range(4):
        stop = threading.Event()
        lock = threading.Lock()

        def produce():
            p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 1,
                          "enable.idempotence": True, "message.timeout.ms": 5000,
                          "reconnect.backoff.max.ms": 200})

            def on_delivery(err, msg):
                if err is None:
                    with lock:
                        acked[msg.value()] = (msg.partition(), msg.offset())

            i = 0
            while not stop.is_set():
                try:
                    p.produce(topic_name, value=b"r%d-%07d" % (round_no, i),
                              partition=i % 2, on_delivery=on_delivery)
                    i += 1
                except BufferError:
                    pass
                p.poll(0.0005)
            p.flush(8)

        if round_no == 0:
            from confluent_kafka.admin import AdminClient, NewTopic
            a = AdminClient({"bootstrap.servers": b.bootstrap})
            a.create_topics([NewTopic(topic_name, 2, 1)])[topic_name].result(30)
        t = threading.Thread(target=produce)
        t.start()
        time.sleep(rng.uniform(0.5, 1.5))
        b.kill()
        stop.set()
        t.join(30)
        b = b.restart()
        fresh_broker.append(b)
    got = consume_all(b.bootstrap, topic_name, partitions=2)
    seen: dict[bytes, tuple[int, int]] = {}
    for part, off, value in got:
        assert value not in seen, f"{value!r} stored twice"
        seen[value] = (part, off)
    for value, where in acked.items():
        assert seen.get(value) == where, f"acknowledged {value!r} at {where} is missing/moved"
    assert len(acked) > 500
