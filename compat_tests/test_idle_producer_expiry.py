"""An idempotent producer that stays idle longer than producer.id.expiration.ms loses its
state in the broker (memory stays bounded with short-lived producers) and carries on
without an error when it writes again: librdkafka's sequence numbers continue where they
were and the broker takes them, as Kafka does; nothing is lost or written twice."""
from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition

from brokerproc import start_broker


def test_an_idle_idempotent_producer_writes_again_after_its_state_expired(tmp_path):
    b = start_broker(str(tmp_path / "data"),
                     extra=["--set", "kafka.producer_id_expiration_ms=200"])
    try:
        p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True,
                      "linger.ms": 0})
        offsets = []

        def produce(values):
            for v in values:
                p.produce("idle", value=v, on_delivery=lambda err, msg: offsets.append(
                    msg.offset() if err is None else err))
                p.flush(10)

        produce([b"a", b"b", b"c"])
        time.sleep(1.0)  # five expiry periods with nothing written
        assert "expired the state of 1 idle producer" in b.log()
        produce([b"d", b"e"])
        assert offsets == [0, 1, 2, 3, 4]
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "idle-reader"})
        c.assign([TopicPartition("idle", 0, 0)])
        got = []
        while len(got) < 5:
            m = c.poll(10)
            assert m is not None and m.error() is None
            got.append(m.value())
        assert got == [b"a", b"b", b"c", b"d", b"e"]
        c.close()
    finally:
        b.stop()
