"""retention.ms removes closed segments (offloaded sections) whose newest record is too old,
and never the active part; the log start offset moves, the high watermark does not. Only
topics whose cleanup.policy includes "delete": a compact-only topic keeps everything."""
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from brokerproc import start_broker


def test_retention_ms_trims_expired_segments(tmp_path):
    b = start_broker(str(tmp_path / "data"), extra=[
        "--set", "kafka.retention_check_interval_s=0.3", "--set", "tail.offload_interval_s=0.2",
        "--set", "tail.offload_target_bytes=1000", "--set", "tail.keep_in_memory_fraction=0.01"])
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        policies = {"ret": "delete", "ret-compact": "compact", "ret-both": "compact,delete"}
        for f in admin.create_topics([
                NewTopic(t, 1, config={"retention.ms": "60000", "cleanup.policy": policy})
                for t, policy in policies.items()]).values():
            f.result(20)
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
        old = int(time.time() * 1000) - 3_600_000
        for i in range(20):  # an hour old: expired once offloaded
            for t in policies:  # (compacted topics take keyed records only)
                p.produce(t, key=b"k%d" % i, value=b"old%d" % i, timestamp=old)
            p.flush(10)
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "ret"})

        def bounds(topic):
            return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)

        deadline = time.time() + 30
        while time.time() < deadline:
            if bounds("ret")[0] > 0 and bounds("ret-both")[0] > 0:
                break
            time.sleep(0.3)
        low, high = bounds("ret")
        assert high == 20, "the high watermark does not move"
        assert 0 < low <= 20, "expired closed segments were trimmed"
        assert 0 < bounds("ret-both")[0] <= 20, "compact,delete: retention applies too"
        time.sleep(1.5)  # five more retention passes
        assert bounds("ret-compact") == (0, 20), "a compact-only topic keeps its records"
        c.assign([TopicPartition("ret-compact", 0, 0)])
        kept = []
        while len(kept) < 20:
            m = c.poll(10)
            assert m is not None and m.error() is None
            kept.append(m.value())
        assert kept == [b"old%d" % i for i in range(20)]
        p.produce("ret", value=b"fresh")
        p.flush(10)
        c.assign([TopicPartition("ret", 0, low)])
        got = []
        while not got or got[-1] != b"fresh":
            m = c.poll(10)
            assert m is not None
            got.append(m.value())
        assert got[-1] == b"fresh" and all(v.startswith(b"old") for v in got[:-1])
        c.close()
    finally:
        b.stop()
