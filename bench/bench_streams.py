"""Unlimited streams: create N streams (default 1,000,000), append one record to each, and
print streams created per second, appends per second and RSS per stream once the tails have
been offloaded (target: < 1 KiB of RSS per idle stream), then time one trim and retention
pass over them (duration, RSS before/after, loop stall and append latency meanwhile).

Runs on the embedded default's storage (SQLite metadata, local-disk WAL with 3 replicas and
quorum 2, local segments) with a small in-memory tail, so idle streams leave memory.

    python bench/bench_streams.py [--streams 1000000] [--concurrency 256]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2core.channel import ChannelConfig  # noqa: E402
from s2core.metadata import open_metadata_store  # noqa: E402
from s2core.objstore.localdir import LocalDirObjectStore  # noqa: E402
from s2core.records import AppendRecord  # noqa: E402
from s2core.server import close_store  # noqa: E402
from s2core.store import ChannelSpec, StreamStore  # noqa: E402
from s2core.wal.locallog import LocalLogReplica  # noqa: E402

BASIN = "bench-basin"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def run_pool(n: int, concurrency: int, fn) -> float:
    it = iter(range(n))

    async def worker():
        for i in it:
            await fn(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


async def probed(store: StreamStore, work) -> tuple[object, float, list[float]]:
    """Await `work` while probing the event loop: returns its result, the longest loop
    stall and the sorted latencies of appends (to one stream, every 5 ms) meanwhile."""
    running = True
    stall = 0.0
    latencies: list[float] = []

    async def loop_probe():
        nonlocal stall
        while running:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, time.perf_counter() - t - 0.001)

    async def append_probe():
        while running:
            t = time.perf_counter()
            await store.append(BASIN, "probe", [AppendRecord(b"p")])
            latencies.append(time.perf_counter() - t)
            await asyncio.sleep(0.005)

    probes = [asyncio.create_task(loop_probe()), asyncio.create_task(append_probe())]
    try:
        return await work, stall, sorted(latencies)
    finally:
        running = False
        await asyncio.gather(*probes)


async def time_retention_pass(store: StreamStore, n: int) -> None:
    """One trim_and_retain pass over the idle streams: its duration, the RSS and stream
    states in memory around it, and the longest loop stall and the append latencies
    meanwhile (next to the same probes over 2 s without a pass)."""
    ch = store.channels["ch0"]
    await store.ensure_stream(BASIN, "probe")
    await store.append(BASIN, "probe", [AppendRecord(b"p")])
    _, stall0, lat0 = await probed(store, asyncio.sleep(2.0))
    gc.collect()
    before, states_before = rss_bytes(), len(ch.streams)
    t0 = time.perf_counter()
    removed, stall, lat = await probed(store, store.trim_and_retain())
    el = time.perf_counter() - t0
    gc.collect()
    print(f"one trim_and_retain pass over {n} idle streams: {el:.2f}s, {removed} sections "
          f"removed; stream states in memory {states_before} -> {len(ch.streams)}; RSS "
          f"{before / 2**20:.1f} -> {rss_bytes() / 2**20:.1f} MiB; longest loop stall "
          f"{stall * 1000:.1f} ms (no pass: {stall0 * 1000:.1f}); appends meanwhile: median "
          f"{lat[len(lat) // 2] * 1000:.1f} ms, slowest {lat[-1] * 1000:.1f} ms (no pass: "
          f"{lat0[len(lat0) // 2] * 1000:.1f}, {lat0[-1] * 1000:.1f})", flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=1_000_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="s2streams-", dir=args.dir))
    try:
        md = open_metadata_store(f"sqlite://{root}/metadata.db")
        cfg = ChannelConfig(memory_bound_bytes=32 * 2**20, keep_in_memory_fraction=0.1,
                            offload_target_bytes=4 * 2**20, offload_interval_s=1.0)
        spec = ChannelSpec("ch0", [LocalLogReplica(root / f"wal{i}") for i in range(3)], 2,
                           cfg)
        store = await StreamStore.open(md, LocalDirObjectStore(root / "segments"), [spec])
        await store.ensure_basin(BASIN)
        gc.collect()
        base = rss_bytes()
        n = args.streams
        el = await run_pool(n, args.concurrency,
                            lambda i: store.create_stream(BASIN, f"stream-{i:07d}"))
        print(f"created {n} streams in {el:.1f}s: {n / el:,.0f} streams/s; "
              f"RSS +{(rss_bytes() - base) / n:.0f} B/stream", flush=True)
        body = b"r" * 100
        el = await run_pool(n, args.concurrency, lambda i: store.append(
            BASIN, f"stream-{i:07d}", [AppendRecord(body)]))
        print(f"appended one 100-byte record to each in {el:.1f}s: {n / el:,.0f} appends/s; "
              f"RSS +{(rss_bytes() - base) / n:.0f} B/stream", flush=True)
        ch = store.channels["ch0"]
        t0 = time.perf_counter()
        while ch.offloader.queue and time.perf_counter() - t0 < 600:
            ch.offloader.wake()
            await asyncio.sleep(0.5)
        await ch.offloader.evict()
        store._handles.clear()
        store.catalog._rows.clear()
        gc.collect()
        per = (rss_bytes() - base) / n
        print(f"after offload ({time.perf_counter() - t0:.1f}s): {len(ch.streams)} stream "
              f"states in memory; RSS +{per:.0f} B per idle stream (target < 1024)")
        await time_retention_pass(store, n)
        check = await store.read(BASIN, f"stream-{n // 2:07d}", seq_num=0)
        assert check.records[0].body == body
        await close_store(store)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
