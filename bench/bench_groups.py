"""Consumer-group benchmark against a real `s2kafka serve` process (local-directory storage).

Prints:
- convergence: a 10-member group (confluent-kafka, classic `range` with 500 ms heartbeats,
  and KIP-848 `group.protocol=consumer`) — time from the 10th member's subscribe until all
  10 own their share of a 20-partition topic;
- offset commits: commits/s and p50/p99 latency of OffsetCommit (1 partition + metadata
  each), over several connections with pipelined requests;
- restart: time to "ready" and the coordinator's load time with 100,000 committed offsets
  (after they were overwritten several times, so compaction has run), and the commit
  figures again with those offsets stored.

    python bench/bench_groups.py [--members 10] [--commits 20000] [--offsets 100000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "compat_tests"))

from conftest import start_broker

from broker.protocol.frames import RequestHeader, decode_response, encode_request
from broker.protocol.messages.create_topics_request import (
    CreatableTopic,
    CreateTopicsRequest,
)
from broker.protocol.messages.offset_commit_request import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)

COMMIT, CREATE_TOPICS = 8, 19


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(p * len(s)))]


class AsyncWire:
    """A pipelining Kafka connection through the repo's codec."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer
        self.corr = 0
        self.waiting: dict[int, tuple[asyncio.Future, int, int]] = {}
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(cls, bootstrap: str) -> AsyncWire:
        host, port = bootstrap.rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def _read_loop(self) -> None:
        while True:
            (size,) = struct.unpack(">i", await self.reader.readexactly(4))
            frame = await self.reader.readexactly(size)
            (corr,) = struct.unpack_from(">i", frame, 0)
            fut, key, version = self.waiting.pop(corr)
            fut.set_result(decode_response(frame, key, version)[1])

    def call(self, key: int, version: int, body) -> asyncio.Future:
        self.corr += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.corr] = (fut, key, version)
        header = RequestHeader(key, version, self.corr, "bench-groups")
        self.writer.writelines([bytes(p) for p in encode_request(header, body)])
        return fut

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    w = await AsyncWire.connect(bootstrap)
    r = await w.call(CREATE_TOPICS, 5, CreateTopicsRequest(
        topics=[CreatableTopic(name=name, num_partitions=partitions, replication_factor=1)],
        timeout_ms=60000))
    assert r.topics[0].error_code == 0, r
    await w.close()


def commit_request(group: str, topic: str, parts: list[int], offset: int, meta: str):
    return OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=-1, member_id="",
        topics=[OffsetCommitRequestTopic(name=topic, partitions=[
            OffsetCommitRequestPartition(partition_index=p, committed_offset=offset,
                                         committed_metadata=meta) for p in parts])])


# ------------------------------------------------------------------ convergence

def convergence(bootstrap: str, members: int, kip848: bool) -> float:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic
    topic = f"conv-{uuid.uuid4().hex[:8]}"
    parts = 2 * members
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, parts, 1)])[topic].result(30)
    group = f"conv-{uuid.uuid4().hex[:8]}"
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    if kip848:
        conf["group.protocol"] = "consumer"
    else:
        conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    owned: dict[int, set[int]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def run(i: int) -> None:
        def assign(_c, ps):
            with lock:
                owned.setdefault(i, set()).update(p.partition for p in ps)

        def revoke(_c, ps):
            with lock:
                owned.setdefault(i, set()).difference_update(p.partition for p in ps)

        c = Consumer(conf)
        c.subscribe([topic], on_assign=assign, on_revoke=revoke, on_lost=revoke)
        while not stop.is_set():
            c.poll(0.05)
        c.close()

    def converged(n: int) -> bool:
        with lock:
            sets = [owned.get(i, set()) for i in range(n)]
        return all(sets) and sum(map(len, sets)) == parts and \
            set().union(*sets) == set(range(parts))

    threads = []
    try:
        for i in range(members - 1):
            threads.append(threading.Thread(target=run, args=(i,), daemon=True))
            threads[-1].start()
        deadline = time.monotonic() + 120
        while not converged(members - 1):
            assert time.monotonic() < deadline, "the first members did not converge"
            time.sleep(0.01)
        time.sleep(1)
        t0 = time.monotonic()
        threads.append(threading.Thread(target=run, args=(members - 1,), daemon=True))
        threads[-1].start()
        while not converged(members):
            assert time.monotonic() < t0 + 120, "the group did not converge"
            time.sleep(0.005)
        return time.monotonic() - t0
    finally:
        stop.set()
        for t in threads:
            t.join(30)


# ---------------------------------------------------------------- offset commits

async def commits(bootstrap: str, total: int, conns: int = 8, depth: int = 16):
    topic = f"commits-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, 16)
    wires = [await AsyncWire.connect(bootstrap) for _ in range(conns)]
    lat: list[float] = []
    per_conn = total // conns

    async def worker(i: int, w: AsyncWire) -> None:
        sem = asyncio.Semaphore(depth)

        async def one(n: int) -> None:
            t = time.perf_counter()
            r = await w.call(COMMIT, 8, commit_request(f"bench-{i % 4}", topic, [n % 16], n,
                                                       f"meta-{n}"))
            assert r.topics[0].partitions[0].error_code == 0, r
            lat.append(time.perf_counter() - t)
            sem.release()

        tasks = []
        for n in range(per_conn):
            await sem.acquire()
            tasks.append(asyncio.ensure_future(one(n)))
        await asyncio.gather(*tasks)

    await asyncio.gather(*(worker(0, w) for w in wires[:1]))  # warm up the connections
    lat.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i, w) for i, w in enumerate(wires)))
    elapsed = time.perf_counter() - t0
    for w in wires:
        await w.close()
    return len(lat) / elapsed, pct(lat, 0.5), pct(lat, 0.99)


async def fill_offsets(bootstrap: str, offsets: int, rounds: int) -> None:
    parts = 1000
    topic = f"many-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, parts)
    groups = max(1, offsets // parts)
    w = await AsyncWire.connect(bootstrap)
    for r in range(rounds):
        futs = [w.call(COMMIT, 8, commit_request(f"fill-{g}", topic, list(range(parts)),
                                                 r * 1000 + g, f"round-{r}"))
                for g in range(groups)]
        for f in futs:
            resp = await f
            assert all(p.error_code == 0 for p in resp.topics[0].partitions)
    await w.close()


def restart_time(b) -> tuple[float, float, str, object]:
    b.stop()
    t0 = time.monotonic()
    b2 = b.restart()
    ready = time.monotonic() - t0
    m = None
    for line in b2.log().splitlines():
        m = re.search(r"group coordinator loaded (\d+) records, (\d+) groups, (\d+) offsets "
                      r"in ([\d.]+)s", line) or m
    assert m, "no coordinator load line in the log"
    return ready, float(m[4]), f"{m[1]} records, {m[2]} groups, {m[3]} offsets", b2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--commits", type=int, default=20000)
    ap.add_argument("--offsets", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    d = tempfile.mkdtemp(prefix="bench-groups-")
    b = start_broker(d)
    try:
        for kip848 in (False, True):
            t = convergence(b.bootstrap, args.members, kip848)
            kind = "KIP-848 (consumer)" if kip848 else "classic range, 500 ms heartbeats"
            print(f"convergence, {args.members}th member joins, {kind}: {t:.2f} s")
        rate, p50, p99 = asyncio.run(commits(b.bootstrap, args.commits))
        print(f"offset commits: {rate:,.0f} commits/s, p50 {p50 * 1000:.2f} ms, "
              f"p99 {p99 * 1000:.2f} ms (8 connections x 16 in flight)")
        ready0, load0, what0, b = restart_time(b)
        print(f"restart before filling: ready in {ready0:.2f} s (coordinator {load0:.3f} s, "
              f"{what0})")
        t0 = time.monotonic()
        asyncio.run(fill_offsets(b.bootstrap, args.offsets, args.rounds))
        print(f"committed {args.offsets:,} offsets x {args.rounds} rounds in "
              f"{time.monotonic() - t0:.1f} s")
        ready, load, what, b = restart_time(b)
        print(f"restart with {args.offsets:,} committed offsets: ready in {ready:.2f} s "
              f"(coordinator {load:.3f} s, {what})")
        rate, p50, p99 = asyncio.run(commits(b.bootstrap, args.commits))
        print(f"offset commits with {args.offsets:,} offsets stored: {rate:,.0f} commits/s, "
              f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
        samples = []
        for _ in range(2):
            ready, load, what, b = restart_time(b)
            samples.append(load)
        print(f"coordinator load, two more restarts: "
              f"{', '.join(f'{s:.3f} s' for s in samples)} (median {statistics.median(samples):.3f} s)")
    finally:
        b.stop()


if __name__ == "__main__":
    main()
