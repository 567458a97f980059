"""Orphan segment objects on a real broker process: a broker killed with SIGKILL, an
object in its segment directory that no catalog row names (what a kill between an
offload's object put and its publish leaves), and after the restart the sweep deletes it
while every acked record stays readable."""
from __future__ import annotations

import json
import os
import sqlite3
import time

from brokerproc import start_broker
from confluent_kafka import Consumer, Producer, TopicPartition

from s2core.sweep import shared_key

FAST = ["--set", "tail.offload_interval_s=0.2", "--set", "tail.offload_target_bytes=2000",
        "--set", "tail.keep_in_memory_fraction=0.01",
        "--set", "segments.orphan_sweep_interval_s=0.3"]


def lease_epoch(data_dir: str) -> int:
    db = sqlite3.connect(os.path.join(data_dir, "metadata.db"))
    try:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        for t in tables:
            cols = [r[1] for r in db.execute(f"pragma table_info({t})")]
            if "key" in cols:
                row = db.execute(f"select value from {t} where key = 'channel/ch0'").fetchone()
                if row:
                    return json.loads(row[0])["epoch"]
    finally:
        db.close()
    raise AssertionError("no lease row")


def test_orphan_left_by_a_killed_broker_is_swept(tmp_path, topic_name):
    data = str(tmp_path / "data")
    b = start_broker(data, extra=FAST)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    for i in range(200):
        p.produce(topic_name, f"v{i}".encode() * 20)
    assert p.flush(30) == 0
    time.sleep(1.0)  # offloaded
    b.kill()
    epoch = lease_epoch(data)
    orphan = shared_key("ch0", epoch, 10**9, 999)
    path = os.path.join(data, "segments", *orphan.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"a segment object nothing ever published")
    b = start_broker(data, kafka_port=int(b.bootstrap.rsplit(":", 1)[1]), extra=FAST)
    try:
        deadline = time.time() + 30
        while os.path.exists(path) and time.time() < deadline:
            time.sleep(0.2)
        assert not os.path.exists(path), "the orphan is still there"
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "orphan-check",
                      "enable.partition.eof": True})
        c.assign([TopicPartition(topic_name, 0, 0)])
        got = []
        while True:
            m = c.poll(10)
            assert m is not None
            if m.error():
                assert m.error().code() == -191  # _PARTITION_EOF
                break
            got.append(m.value())
        c.close()
        assert got == [f"v{i}".encode() * 20 for i in range(200)]
        assert "orphan segment" in b.log()
    finally:
        b.stop()
