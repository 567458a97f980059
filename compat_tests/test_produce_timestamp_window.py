"""A topic with a timestamp window (message.timestamp.before.max.ms / after.max.ms) refuses
CreateTime records outside it with INVALID_TIMESTAMP, as Kafka does, and stores nothing of
the refused batch: confluent-kafka (librdkafka) and kafka-python both see the error."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from kafka.errors import InvalidTimestampError

HOUR = 3_600_000


def create(broker, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, config={
        "message.timestamp.before.max.ms": str(HOUR),
        "message.timestamp.after.max.ms": "60000"})])[topic].result(20)


def values(broker, topic: str) -> list[bytes]:
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-reader",
                  "enable.auto.commit": False})
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    while len(out) < high:
        m = c.poll(10)
        assert m is not None and m.error() is None, m and m.error()
        out.append(m.value())
    c.close()
    return out


def test_records_outside_the_window_are_refused(broker, topic_name):
    create(broker, topic_name)
    now = int(time.time() * 1000)
    reports = {}
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                  "retries": 0, "batch.size": 1})  # one message per batch
    for name, ts in (("two hours old", now - 2 * HOUR), ("now", now),
                     ("ten minutes ahead", now + 600_000), ("half an hour old", now - HOUR // 2)):
        p.produce(topic_name, value=name.encode(), timestamp=ts,
                  on_delivery=lambda err, msg, name=name: reports.__setitem__(name, err))
    assert p.flush(30) == 0
    assert {k: err.code() if err else None for k, err in reports.items()} == {
        "two hours old": KafkaError.INVALID_TIMESTAMP, "now": None,
        "ten minutes ahead": KafkaError.INVALID_TIMESTAMP, "half an hour old": None}

    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0)
    with pytest.raises(InvalidTimestampError):
        kp.send(topic_name, b"kafka-python, a day old", timestamp_ms=now - 24 * HOUR).get(30)
    kp.send(topic_name, b"kafka-python, now", timestamp_ms=int(time.time() * 1000)).get(30)
    kp.close()

    assert values(broker, topic_name) == [b"now", b"half an hour old", b"kafka-python, now"]
