"""Several brokers in one cluster (broker/cluster.py), as real processes sharing a SQLite
metadata file and a segment directory, each with its own WAL: confluent-kafka clients see
every broker and the partitions spread over them; a broker killed with SIGKILL has its
channel adopted by another within the session timeout, and an idempotent producer and a
consumer group carry on with nothing acked lost or duplicated; the broker comes back and
takes its channel back; the broker that coordinates the groups dies and the committed
offsets are still there; a second broker with a live node id is refused. (Transactions:
test_cluster_transactions.py.)"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
from brokerproc import ROOT, find_coordinators, start_broker
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

HEARTBEAT, SESSION = 0.3, 2.0


def _journal_keys() -> dict[int, str]:
    """A group name for each group journal partition."""
    import sys
    sys.path.insert(0, str(ROOT))
    from broker.groups.journal import PARTITIONS, partition_of
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < PARTITIONS:
        keys.setdefault(partition_of(f"jk{i}"), f"jk{i}")
        i += 1
    return keys


JOURNAL_KEYS = _journal_keys()


def flags(root: str, n: int) -> list[str]:
    return ["--set", "server.cluster=true", "--set", f"server.node_id={n}",
            "--set", f"metadata.url=sqlite://{root}/shared/metadata.db",
            "--set", f"segments.url=file://{root}/shared/segments",
            "--set", f"server.cluster_heartbeat_interval_s={HEARTBEAT}",
            "--set", f"server.cluster_session_timeout_s={SESSION}",
            "--set", "tail.offload_interval_s=0.2"]


class Cluster:
    def __init__(self, root: str, n: int = 3) -> None:
        self.root = root
        os.makedirs(f"{root}/shared", exist_ok=True)
        self.brokers = [start_broker(f"{root}/b{i}", extra=flags(root, i)) for i in range(n)]
        self.bootstrap = ",".join(b.bootstrap for b in self.brokers)
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self.wait_for(lambda: len(self.admin.list_topics(timeout=10).brokers) == n)
        time.sleep(3 * HEARTBEAT)  # (every broker's view has refreshed since, not just one)
        self.wait_for(self.coordinators_spread)  # (the first broker's journal, balanced)

    def coordinators(self) -> dict[int, int]:
        """Journal partition -> the broker coordinating its groups and transactional ids."""
        by_key = find_coordinators(self.bootstrap, list(JOURNAL_KEYS.values()))
        return {i: by_key[k] for i, k in JOURNAL_KEYS.items()}

    def coordinators_spread(self) -> bool:
        live = {int(b.id) for b in self.admin.list_topics(timeout=10).brokers.values()}
        count = Counter(self.coordinators().values())
        return set(count) <= live and \
            max(count[n] for n in live) - min(count[n] for n in live) <= 1

    def coordinator(self, key: str, key_type: int = 0) -> int:
        return find_coordinators(self.bootstrap, [key], key_type)[key]

    def restart(self, i: int) -> None:
        port = int(self.brokers[i].bootstrap.rsplit(":", 1)[1])
        self.brokers[i] = start_broker(f"{self.root}/b{i}", kafka_port=port,
                                       extra=flags(self.root, i))

    def leaders(self, topic: str) -> dict[int, int]:
        md = self.admin.list_topics(topic, timeout=10)
        return {p: m.leader for p, m in md.topics[topic].partitions.items()}

    @staticmethod
    def wait_for(cond, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except KafkaException:
                pass
            time.sleep(0.2)
        raise AssertionError("condition not met in time")

    def stop(self) -> list[int]:
        return [b.stop() for b in self.brokers]


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(str(tmp_path))
    yield c
    codes = c.stop()
    assert codes == [0] * len(codes), [b.log()[-3000:] for b in c.brokers]


def create(c: Cluster, topic: str, partitions: int = 6) -> None:
    for f in c.admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result()


def produce(c: Cluster, topic: str, start: int, count: int, acked: list) -> None:
    p = Producer({"bootstrap.servers": c.bootstrap, "enable.idempotence": True,
                  "message.timeout.ms": 60000})

    def done(err, m):
        assert err is None, err
        acked.append((m.partition(), m.offset(), m.value()))

    for i in range(start, start + count):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), on_delivery=done)
        p.poll(0)
    assert p.flush(60) == 0


def consume(c: Cluster, topic: str, group: str, want: int, commit: bool = True) -> list:
    cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    cons.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < want and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append((m.partition(), m.offset(), m.value()))
    if commit and got:
        cons.commit(asynchronous=False)
    extra = cons.poll(1.0)  # nothing beyond what was acked
    assert extra is None or extra.error() is not None, extra.value()
    cons.close()
    return got


def test_partitions_spread_and_failover(cluster):
    c = cluster
    topic = f"cl-{uuid.uuid4().hex[:6]}"
    create(c, topic)
    leaders = c.leaders(topic)
    assert set(leaders.values()) == {0, 1, 2}, leaders
    md = c.admin.describe_cluster().result() if hasattr(c.admin, "describe_cluster") else None
    if md is not None:
        assert sorted(n.id for n in md.nodes) == [0, 1, 2] and md.controller.id == 0
    acked: list = []
    produce(c, topic, 0, 300, acked)
    victim = leaders[0]
    if victim == 0:
        victim = 2
    c.brokers[victim].kill()
    produce(c, topic, 300, 300, acked)  # carries on once another broker adopted its WAL
    moved = c.leaders(topic)
    assert victim not in moved.values() and -1 not in moved.values(), moved
    c.restart(victim)
    c.wait_for(lambda: c.leaders(topic) == leaders)  # it took its channel back
    produce(c, topic, 600, 300, acked)
    got = consume(c, topic, "cl-readers", len(acked))
    assert sorted(got) == sorted(acked) and len(set(got)) == 900
    for p in range(6):  # offsets contiguous per partition, in produce order
        offs = [o for q, o, _ in sorted(got) if q == p]
        assert offs == list(range(len(offs)))


def test_group_coordinator_failover_keeps_committed_offsets(cluster):
    c = cluster
    topic = f"cl-g-{uuid.uuid4().hex[:6]}"
    create(c, topic, 3)
    acked: list = []
    produce(c, topic, 0, 200, acked)
    first = consume(c, topic, "cl-group", 200)  # committed at the end
    assert sorted(first) == sorted(acked)
    victim = c.coordinator("cl-group")
    c.brokers[victim].kill()
    produce(c, topic, 200, 100, acked)
    rest = consume(c, topic, "cl-group", 100)  # resumes from the committed offsets
    assert sorted(rest) == sorted(acked[200:]), (len(rest), rest[:3])
    c.restart(victim)
    c.wait_for(lambda: len(c.admin.list_topics(timeout=10).brokers) == 3)


def test_a_live_node_id_is_refused(cluster, tmp_path):
    c = cluster
    args = [sys.executable, "-m", "broker.cli", "serve", "--data-dir", str(tmp_path / "dup"),
            "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
            *flags(c.root, 1)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode != 0 and "node id 1 is in use" in out.stderr, out.stderr[-2000:]
    assert len(c.admin.list_topics(timeout=10).brokers) == 3  # nobody was disturbed


def test_a_broker_stopped_cleanly_hands_over_and_back(cluster):
    """SIGTERM: the broker says it leaves, another takes its WAL over at its next beat
    (well within the session timeout), and everything acked is there."""
    c = cluster
    topic = f"cl-stop-{uuid.uuid4().hex[:6]}"
    create(c, topic)
    leaders = c.leaders(topic)
    acked: list = []
    produce(c, topic, 0, 200, acked)
    assert c.brokers[1].stop() == 0
    t0 = time.monotonic()
    c.wait_for(lambda: 1 not in c.leaders(topic).values() and -1 not in
               c.leaders(topic).values())
    taken = time.monotonic() - t0
    produce(c, topic, 200, 200, acked)
    c.restart(1)
    c.wait_for(lambda: c.leaders(topic) == leaders)
    got = consume(c, topic, "cl-stop-readers", len(acked))
    assert sorted(got) == sorted(acked) and len(set(got)) == 400
    assert taken < SESSION + 1.0, taken


def test_coordinators_spread_over_the_brokers(cluster):
    """The group journal starts on the first broker; its partitions were moved until each
    broker coordinates some groups, and groups work wherever they landed."""
    c = cluster
    coords = c.coordinators()
    assert set(coords.values()) == {0, 1, 2}, coords
    topic = f"cl-co-{uuid.uuid4().hex[:6]}"
    create(c, topic, 3)
    acked: list = []
    produce(c, topic, 0, 90, acked)
    for node in (0, 1, 2):
        group = JOURNAL_KEYS[min(i for i, n in coords.items() if n == node)]
        got = consume(c, topic, group, 90)  # committed at the end
        assert sorted(got) == sorted(acked)
        assert consume(c, topic, group, 0) == [], "resumed from the committed offsets"


def test_a_topic_deleted_and_made_again_starts_empty_on_every_broker(cluster):
    """Deleted and created again through one broker: the others drop what they cached of
    the old partitions' streams, and serve the new ones from offset 0."""
    c = cluster
    topic = f"cl-del-{uuid.uuid4().hex[:6]}"
    create(c, topic, 3)
    old: list = []
    produce(c, topic, 0, 60, old)
    for f in c.admin.delete_topics([topic]).values():
        f.result()
    c.wait_for(lambda: topic not in c.admin.list_topics(timeout=10).topics)
    time.sleep(3 * HEARTBEAT)  # (every broker's beat has read the deletion)
    create(c, topic, 3)
    new: list = []
    produce(c, topic, 1000, 30, new)
    for q in range(3):  # offsets from 0 again in every partition
        offsets = sorted(o for p, o, _ in new if p == q)
        assert offsets == list(range(len(offsets))), (q, offsets)
    got = consume(c, topic, f"cl-del-r-{uuid.uuid4().hex[:4]}", 30)
    assert sorted(got) == sorted(new)
