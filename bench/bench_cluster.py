"""Cluster benchmark: produce throughput of one broker against clusters of two and three
(broker/cluster.py) on this machine, and how long a failover leaves partitions without a
leader.

- Throughput: one confluent-kafka producer, 1 KiB records, acks=all, a topic of 6
  partitions, `--seconds` per run; each broker is a process with its own local WAL, the
  brokers of a cluster share a SQLite metadata file and a segment directory. Targets
  alternate per round; medians are printed. (All of it runs on this machine's cores, the
  client included: a cluster's gain here is bounded by the cores the brokers get.)
- Failover: a 3-broker cluster with the default heartbeat (1 s) and session timeout
  (6 s); a producer sends one record a millisecond to every partition; one broker is
  stopped with SIGKILL (then, in a second run, SIGTERM); printed is the longest time
  between two acks of a partition that broker led (how long its partitions had no
  leader, as clients saw it), and whether every acked record is there afterwards.
- Reassignment (docs/decisions/0021): a 3-broker cluster; partition 0 is filled with
  `--fill-mib` of 1 KiB records (offloaded to segments, as a long-lived partition is),
  then a producer sends one record a millisecond to every partition while kafka-python's
  AlterPartitionReassignments moves partition 0 to the next broker; printed are how long
  the request took, the longest time between two acks of partition 0 around the move,
  and whether every acked record is there afterwards. Done for an empty and a filled
  partition: a move copies nothing but the tail the segments lack, so the size should
  not matter.

    python bench/bench_cluster.py [--rounds 3] [--seconds 5] [--fill-mib 64]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compat_tests"))

from brokerproc import start_broker  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

RECORD = 1024
PARTITIONS = 6


def flags(root: str, n: int, heartbeat: float = 1.0, session: float = 6.0) -> list[str]:
    return ["--set", "server.cluster=true", "--set", f"server.node_id={n}",
            "--set", f"metadata.url=sqlite://{root}/shared/metadata.db",
            "--set", f"segments.url=file://{root}/shared/segments",
            "--set", f"server.cluster_heartbeat_interval_s={heartbeat}",
            "--set", f"server.cluster_session_timeout_s={session}"]


def start_cluster(n: int, **kw) -> tuple[str, list]:
    root = tempfile.mkdtemp(prefix=f"bench-cluster{n}-")
    os.makedirs(f"{root}/shared")
    if n == 1:  # a broker alone, as it runs by default
        brokers = [start_broker(f"{root}/b0")]
    else:
        brokers = [start_broker(f"{root}/b{i}", extra=flags(root, i, **kw)) for i in range(n)]
    bootstrap = ",".join(b.bootstrap for b in brokers)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while len(admin.list_topics(timeout=10).brokers) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3 * kw.get("heartbeat", 1.0))  # every broker's view has every broker
    return root, brokers


def stop_cluster(root: str, brokers: list) -> None:
    for b in brokers:
        b.stop()
    shutil.rmtree(root, ignore_errors=True)


def create_topic(bootstrap: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        f.result(30)
    return name


def produce_throughput(bootstrap: str, seconds: float) -> float:
    topic = create_topic(bootstrap)
    failed = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
                  "delivery.report.only.error": True,
                  "on_delivery": lambda err, m: failed.append(err)})
    body = os.urandom(RECORD)
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for _ in range(1000):
            try:
                p.produce(topic, body, partition=sent % PARTITIONS)
                sent += 1
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)
    elapsed = time.monotonic() - t0
    return (sent - len(failed)) * RECORD / elapsed / 2**20


def failover(sig: int) -> tuple[float, int, bool]:
    """(longest gap between acks of the victim's partitions in s, acked records, all
    there afterwards)."""
    root, brokers = start_cluster(3)
    try:
        bootstrap = ",".join(b.bootstrap for b in brokers)
        topic = create_topic(bootstrap)
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        leaders = {p: m.leader for p, m in md.topics[topic].partitions.items()}
        victim = max(leaders.values())
        mine = {p for p, n in leaders.items() if n == victim}
        acks: dict[int, list[float]] = {p: [] for p in leaders}
        acked: list = []

        def done(err, m):
            if err is None:
                acks[m.partition()].append(time.monotonic())
                acked.append((m.partition(), m.offset()))

        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "linger.ms": 0, "message.timeout.ms": 120000, "on_delivery": done})
        end = time.monotonic() + 14
        killed_at = time.monotonic() + 2
        killed = False
        i = 0
        while time.monotonic() < end:
            if not killed and time.monotonic() >= killed_at:
                if sig == signal.SIGKILL:
                    brokers[victim].kill()
                else:
                    brokers[victim].stop()
                killed = True
            p.produce(topic, b"x", partition=i % PARTITIONS)
            i += 1
            p.poll(0.001)
        p.flush(120)
        gap = max(max((b - a for a, b in zip(acks[q], acks[q][1:])), default=0.0)
                  for q in mine)
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-check",
                      "enable.partition.eof": True})
        c.assign([TopicPartition(topic, q, 0) for q in leaders])
        seen, eof = set(), set()
        deadline = time.monotonic() + 60
        while len(eof) < len(leaders) and time.monotonic() < deadline:
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                eof.add(m.partition())
                continue
            seen.add((m.partition(), m.offset()))
        c.close()
        return gap, len(acked), set(acked) <= seen
    finally:
        stop_cluster(root, brokers)


def reassign(fill_mib: int) -> tuple[float, float, int, bool]:
    """(seconds the reassignment request took, longest gap between acks of the moved
    partition in s, acked records, all there afterwards)."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP

    root, brokers = start_cluster(3, heartbeat=0.3, session=2.0)
    try:
        bootstrap = ",".join(b.bootstrap for b in brokers)
        topic = create_topic(bootstrap)
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        leader = md.topics[topic].partitions[0].leader
        filler = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                           "batch.size": 1 << 20})
        value = os.urandom(RECORD)
        for _ in range(fill_mib * 1024):
            while True:
                try:
                    filler.produce(topic, value, partition=0)
                    break
                except BufferError:
                    filler.poll(0.01)
        assert filler.flush(120) == 0
        time.sleep(3)  # (the fill offloaded to segments, as an older partition's data is)
        acks: list[float] = []
        acked: list = []

        def done(err, m):
            if err is None:
                acked.append((m.partition(), m.offset()))
                if m.partition() == 0:
                    acks.append(time.monotonic())

        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "linger.ms": 0, "message.timeout.ms": 60000, "on_delivery": done})
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
        end = time.monotonic() + 6
        move_at, took = time.monotonic() + 2, None
        i = 0
        while time.monotonic() < end:
            if took is None and time.monotonic() >= move_at:
                t0 = time.monotonic()
                res = admin.alter_partition_reassignments({KTP(topic, 0): [(leader + 1) % 3]})
                took = time.monotonic() - t0
                assert res == {KTP(topic, 0): None}, res
            p.produce(topic, b"x", partition=i % PARTITIONS)
            i += 1
            p.poll(0.001)
        p.flush(60)
        admin.close()
        gap = max((b - a for a, b in zip(acks, acks[1:])), default=0.0)
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-check",
                      "enable.partition.eof": True})
        tail = {q: min(o for pp, o in acked if pp == q) for q in range(PARTITIONS)}
        c.assign([TopicPartition(topic, q, tail[q]) for q in range(PARTITIONS)])
        seen, eof = set(), set()
        deadline = time.monotonic() + 60
        while len(eof) < PARTITIONS and time.monotonic() < deadline:
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                eof.add(m.partition())
                continue
            seen.add((m.partition(), m.offset()))
        c.close()
        return took, gap, len(acked), set(acked) <= seen
    finally:
        stop_cluster(root, brokers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--fill-mib", type=int, default=64)
    ap.add_argument("--only", choices=("throughput", "failover", "reassign"))
    args = ap.parse_args()
    if args.only == "reassign":
        return report_reassign(args.fill_mib)
    results: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for r in range(args.rounds):
        for n in (1, 2, 3):
            root, brokers = start_cluster(n)
            try:
                mib = produce_throughput(",".join(b.bootstrap for b in brokers), args.seconds)
            finally:
                stop_cluster(root, brokers)
            results[n].append(mib)
            print(f"round {r + 1}: {n} broker(s): produce {mib:.1f} MiB/s", flush=True)
    for n, v in results.items():
        print(f"{n} broker(s): produce median {statistics.median(v):.1f} MiB/s "
              f"({statistics.median(v) / statistics.median(results[1]):.2f} x one broker)")
    for sig in (signal.SIGKILL, signal.SIGTERM):
        gap, n, ok = failover(sig)
        print(f"failover after {signal.Signals(sig).name}: the stopped broker's partitions "
              f"went {gap:.2f} s without an ack (heartbeat 1 s, session timeout 6 s); "
              f"{n} records acked, {'all' if ok else 'NOT all'} there afterwards")
    report_reassign(args.fill_mib)


def report_reassign(fill_mib: int) -> None:
    for mib in (0, fill_mib):
        took, gap, n, ok = reassign(mib)
        print(f"reassignment of a partition holding {mib} MiB to another broker: answered "
              f"in {took * 1000:.0f} ms; its acks paused at most {gap * 1000:.0f} ms; "
              f"{n} records acked meanwhile, {'all' if ok else 'NOT all'} there afterwards",
              flush=True)


if __name__ == "__main__":
    main()
