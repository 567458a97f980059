"""The smallest end-to-end check: Debian's kcat and confluent-kafka round-trip records."""
import shutil
import subprocess

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition


def test_confluent_kafka_round_trip(broker, topic_name):
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(10):
        p.produce(topic_name, key=b"k%d" % i, value=b"v%d" % i)
    assert p.flush(20) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "smoke",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic_name, 0, 0)])
    got = []
    while len(got) < 10:
        m = c.poll(10)
        assert m is not None, "timed out"
        assert m.error() is None, m.error()
        got.append((m.offset(), m.key(), m.value()))
    c.close()
    assert got == [(i, b"k%d" % i, b"v%d" % i) for i in range(10)]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is installed by .ci/run")
def test_debian_kcat_round_trip(broker, topic_name):
    subprocess.run(["kcat", "-b", broker.bootstrap, "-t", topic_name, "-P", "-K:"],
                   input=b"a:1\nb:2\nc:3\n", check=True, timeout=30)
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-t", topic_name, "-C", "-e",
                          "-f", "%o %k %s\\n"], check=True, timeout=30,
                         capture_output=True).stdout
    assert out.decode().splitlines() == ["0 a 1", "1 b 2", "2 c 3"]
