"""Log compaction with real clients on a real broker process: after the cleaner has run,
consumers (confluent-kafka, kafka-python, kcat) read from offset 0 only the last record of
each key, at the offset it was written at, tombstones past delete.retention.ms gone; the
log start and the high watermark stay; and it all holds after a restart."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from brokerproc import start_broker
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

TOPIC = "compacted"
FAST = ["--set", "kafka.log_cleaner_interval_s=0.3", "--set", "tail.offload_interval_s=0.2",
        "--set", "tail.offload_target_bytes=2000", "--set", "tail.keep_in_memory_fraction=0.01"]


def read_all(bootstrap: str, high: int) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) from offset 0 up to `high`, with confluent-kafka."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-reader",
                  "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(TOPIC, 0, 0)])
        out = []
        deadline = time.time() + 30
        while time.time() < deadline:
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    return out
                raise AssertionError(m.error())
            out.append((m.offset(), m.key(), m.value()))
        raise AssertionError(f"no end of partition after {len(out)} records")
    finally:
        c.close()


def produce_history(p: Producer, rounds: int, keys: int) -> dict[bytes, tuple[int, bytes]]:
    """Every key written `rounds` times, in batches that mix keys; key -> (offset, value)
    of its last record."""
    last: dict[bytes, tuple[int, bytes]] = {}

    def done(err, msg):
        assert err is None, err
        last[msg.key()] = (msg.offset(), msg.value())

    for r in range(rounds):
        for k in range(keys):
            p.produce(TOPIC, key=b"key-%02d" % k, value=b"round-%d-%02d" % (r, k) + b"." * 100,
                      on_delivery=done)
        p.flush(10)
    return last


def test_consumers_read_the_last_record_of_each_key(tmp_path):
    b = start_broker(str(tmp_path / "data"), extra=FAST)
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, config={
            "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "0"})])[TOPIC].result(20)
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5,
                      "enable.idempotence": True, "compression.type": "gzip"})
        last = produce_history(p, rounds=8, keys=40)
        deleted = [b"key-%02d" % k for k in range(5)]
        for key in deleted:  # tombstones: with delete.retention.ms=0 they go at once
            p.produce(TOPIC, key=key, value=None)
        p.flush(10)
        for key in deleted:
            last.pop(key)
        # the newest records are still only in the WAL (the active segment): write more
        # of another key so that everything above is offloaded and cleanable
        for i in range(30):
            p.produce(TOPIC, key=b"filler", value=b"f%d" % i + b"." * 200)
        p.flush(10)
        high = 8 * 40 + 5 + 30
        expected = sorted((off, k, v) for k, (off, v) in last.items())
        deadline = time.time() + 60
        got = None
        while time.time() < deadline:
            got = [r for r in read_all(b.bootstrap, high) if r[1] != b"filler"]
            if got == expected:
                break
            time.sleep(0.5)
        assert got == expected, "only the last record of each key is left, at its offset"
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "w"})
        assert c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10) == (0, high)
        c.close()

        # kafka-python steps over the gaps too
        k = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None,
                          enable_auto_commit=False, consumer_timeout_ms=5000)
        tp = KTopicPartition(TOPIC, 0)
        k.assign([tp])
        k.seek(tp, 0)
        seen = [(m.offset, m.key, m.value) for m in k if m.key != b"filler"]
        k.close()
        assert seen == expected

        if shutil.which("kcat"):  # and Debian's kcat reaches the end of the partition
            out = subprocess.run(["kcat", "-b", b.bootstrap, "-C", "-t", TOPIC, "-e", "-o",
                                  "beginning", "-f", "%o %k\\n"], capture_output=True,
                                 timeout=60, check=True).stdout.decode().split("\n")
            assert [line for line in out if line and "filler" not in line] == [
                f"{off} {key.decode()}" for off, key, _ in expected]

        # after a restart: the compacted sections are what is read, and new writes are
        # compacted against them
        b = b.restart()
        assert [r for r in read_all(b.bootstrap, high) if r[1] != b"filler"] == expected
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
        newer = produce_history(p, rounds=1, keys=10)
        for i in range(30):
            p.produce(TOPIC, key=b"filler", value=b"g%d" % i + b"." * 200)
        p.flush(10)
        last.update(newer)
        expected = sorted((off, k, v) for k, (off, v) in last.items())
        deadline = time.time() + 60
        while time.time() < deadline:
            got = [r for r in read_all(b.bootstrap, high + 40) if r[1] != b"filler"]
            if got == expected:
                break
            time.sleep(0.5)
        assert got == expected
    finally:
        b.stop()


@pytest.mark.parametrize("policy", ["delete"])
def test_a_delete_topic_is_never_compacted(tmp_path, policy):
    b = start_broker(str(tmp_path / "data"), extra=FAST)
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, config={"cleanup.policy": policy})])[
            TOPIC].result(20)
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
        produce_history(p, rounds=5, keys=10)
        time.sleep(2)  # several offloads and cleaner passes
        assert len(read_all(b.bootstrap, 50)) == 50
    finally:
        b.stop()
