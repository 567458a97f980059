"""A compacted topic refuses records without a key, and confluent-kafka (librdkafka) reports
it per message from the broker's record errors (KIP-467), as against Kafka: the keyless
records fail with INVALID_RECORD, their batch mates with
_INVALID_DIFFERENT_RECORD, and nothing of a refused batch is stored."""
from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_compacted(broker, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, config={"cleanup.policy": "compact"})])[topic] \
        .result(20)


def produce(broker, topic: str, keys: list[bytes | None], **conf) -> list:
    """Produce one message per key; the delivery report of each, in produce order."""
    reports: list = [None] * len(keys)

    def on_delivery(i):
        def cb(err, msg):
            reports[i] = (err, msg.offset())
        return cb

    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                  "retries": 0, **conf})
    # (the partition's leader known first: messages produced before it is may leave in
    # more than one batch, and then keyed ones without a keyless batch mate succeed)
    p.list_topics(topic, timeout=10)
    for i, key in enumerate(keys):
        p.produce(topic, value=b"v%d" % i, key=key, partition=0, on_delivery=on_delivery(i))
    assert p.flush(30) == 0
    return reports


def consume_all(broker, topic: str) -> list[tuple[bytes, bytes]]:
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-reader",
                  "enable.auto.commit": False})
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    while len(out) < high:
        m = c.poll(10)
        assert m is not None and m.error() is None, m and m.error()
        out.append((m.key(), m.value()))
    c.close()
    return out


def test_keyless_records_fail_per_message_and_their_batch_is_refused(broker, topic_name):
    create_compacted(broker, topic_name)
    keys = [None if i % 4 == 0 else b"k%d" % i for i in range(10)]  # 0, 4, 8 keyless
    reports = produce(broker, topic_name, keys, **{"linger.ms": 500})  # one batch
    # (the broker's per-record reason reaches librdkafka's message errstr, which the Python
    # binding does not expose: tests/broker/test_produce_record_validation.py checks the text)
    assert [err.code() if err else None for err, _ in reports] == [
        KafkaError.INVALID_RECORD if k is None else KafkaError._INVALID_DIFFERENT_RECORD
        for k in keys]

    # one message per batch: only the keyless ones fail; the others are stored in order
    reports = produce(broker, topic_name, keys, **{"batch.size": 1})
    assert [err.code() if err else None for err, _ in reports] == \
        [KafkaError.INVALID_RECORD if k is None else None for k in keys]
    assert [off for err, off in reports if err is None] == list(range(7))
    assert consume_all(broker, topic_name) == [(k, b"v%d" % i) for i, k in enumerate(keys)
                                               if k is not None]
