"""Two broker processes with their metadata in DynamoDB (docs/decisions/0019; moto's
server, tests/s2core/moto_dynamodb_server.py) and their segments in a shared directory:
topics, an idempotent producer, a consumer group's committed offsets and a transaction
work; a broker killed with SIGKILL is taken over with nothing acked lost."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from brokerproc import ROOT, start_broker
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


@pytest.fixture
def dynamodb(tmp_path):
    log_path = tmp_path / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests/s2core/moto_dynamodb_server.py"),
                                 "0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"Running on (http://127\.0\.0\.1:\d+)",
                                  log_path.read_text(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def test_brokers_on_dynamodb_metadata(tmp_path, dynamodb, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    url = f"dynamodb://s2kafka-{uuid.uuid4().hex[:8]}?region=us-east-1&endpoint_url={dynamodb}"
    os.makedirs(tmp_path / "shared")

    def flags(n: int) -> list[str]:
        return ["--set", "server.cluster=true", "--set", f"server.node_id={n}",
                "--set", f"metadata.url={url}",
                "--set", f"segments.url=file://{tmp_path}/shared/segments",
                "--set", "server.cluster_heartbeat_interval_s=0.3",
                "--set", "server.cluster_session_timeout_s=2.0",
                "--set", "tail.offload_interval_s=0.2"]

    brokers = [start_broker(str(tmp_path / f"b{i}"), extra=flags(i)) for i in range(2)]
    try:
        bootstrap = ",".join(b.bootstrap for b in brokers)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.monotonic() + 30
        while len(admin.list_topics(timeout=10).brokers) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        topic = f"dy-{uuid.uuid4().hex[:6]}"
        for f in admin.create_topics([NewTopic(topic, 4, 1)]).values():
            f.result()
        md = admin.list_topics(topic, timeout=10).topics[topic].partitions
        assert {m.leader for m in md.values()} == {0, 1}
        acked = []

        def done(err, m):
            assert err is None, err
            acked.append((m.partition(), m.offset(), m.value()))

        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "message.timeout.ms": 60000})
        for i in range(200):
            p.produce(topic, value=f"v{i}".encode(), partition=i % 4, on_delivery=done)
        assert p.flush(60) == 0
        tx = Producer({"bootstrap.servers": bootstrap, "transactional.id": "dy-tx"})
        tx.init_transactions(30)
        tx.begin_transaction()
        for i in range(8):
            tx.produce(topic, value=f"t{i}".encode(), partition=i % 4)
        tx.commit_transaction(30)
        brokers[1].kill()
        for i in range(200, 300):
            p.produce(topic, value=f"v{i}".encode(), partition=i % 4, on_delivery=done)
        assert p.flush(60) == 0
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "dy-group",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 308 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition(topic, q) for q in range(4)], 10)
        c.close()
        assert sorted(got) == sorted([v for _, _, v in acked] +
                                     [f"t{i}".encode() for i in range(8)])
        assert sum(tp.offset for tp in committed) >= 308
    finally:
        for b in brokers:
            b.stop()
