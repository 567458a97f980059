"""Log compaction (broker/cleaner.py): how fast one clean goes, and what it costs appends
running meanwhile.

Writes N Kafka records (in batches of --per, keys drawn from --keys, 100-byte values) to a
compacted topic's partition, stored as the Produce service stores them, on the embedded
default's storage (SQLite metadata, a local-disk WAL, local segments); offloads them; then
prints, per codec:
- one clean on an idle broker: wall time, CPU, records and MiB per CPU second, and the
  partition's offloaded bytes before and after;
- the same clean again (fresh data) while another stream takes 1 KiB appends at 2 MiB/s
  (an open loop): ack p50/p99 during the clean against the same load without it, and how
  long the clean took then (it works in 0.25 ms slices with 2 ms rests while appends come:
  decision 0009).

    python bench/bench_compaction.py [--records 200000] [--per 100] [--keys 10000]
                                     [--codecs none,lz4]
"""
from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.cleaner import LogCleaner  # noqa: E402
from broker.kafka import Broker, BrokerConfig  # noqa: E402
from broker.protocol.records import Compression, Record, build_batch  # noqa: E402
from s2core.channel import ChannelConfig  # noqa: E402
from s2core.metadata import open_metadata_store  # noqa: E402
from s2core.objstore.localdir import LocalDirObjectStore  # noqa: E402
from s2core.records import AppendRecord  # noqa: E402
from s2core.server import close_store, tune_runtime  # noqa: E402
from s2core.store import ChannelSpec, StreamStore  # noqa: E402
from s2core.wal.locallog import LocalLogReplica  # noqa: E402

BASIN = "bench-basin"
LOAD = 2 * 2**20  # bytes/s of the foreground appends


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


async def fill(b: Broker, topic: str, n: int, per: int, keys: int, codec: Compression,
               rnd: random.Random) -> None:
    name = b.stream(topic, 0)
    appends = []
    for _ in range(n // per):
        recs = [Record(j, 1_000, b"key-%08d" % rnd.randrange(keys), b"v" * 100)
                for j in range(per)]
        raw = bytes(build_batch(recs, compression=codec))
        appends.append(b.store.append(BASIN, name, [AppendRecord(body=raw, timestamp=1_000,
                                                                 span=per)]))
        if len(appends) == 64:
            await asyncio.gather(*appends)
            appends = []
    await asyncio.gather(*appends)
    for ch in b.store.channels.values():
        while await ch.offloader.offload_once():
            pass


async def foreground(store: StreamStore, seconds: float) -> list[float]:
    """1 KiB appends at LOAD, open loop: latencies from each one's due time."""
    interval = 1024 / LOAD
    lat: list[float] = []
    start = time.perf_counter()
    tasks = []

    async def one(due: float) -> None:
        await store.append(BASIN, "fg", [AppendRecord(b"x" * 1024)])
        lat.append(time.perf_counter() - due)

    i = 0
    while (due := start + i * interval) < start + seconds:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
        i += 1
    await asyncio.gather(*tasks)
    return lat


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--per", type=int, default=100)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--codecs", default="none,lz4")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="s2compact-"))
    store = None
    try:
        store = await StreamStore.open(
            open_metadata_store(f"sqlite://{root}/metadata.db"),
            LocalDirObjectStore(root / "segments"),
            [ChannelSpec("ch0", [LocalLogReplica(root / "wal")], 1,
                         ChannelConfig(offload_interval_s=3600))])
        b = Broker(store, BrokerConfig(basin=BASIN))
        await b.start()
        await store.create_stream(BASIN, "fg")
        tune_runtime()  # (as the server does once started)
        rnd = random.Random(1)
        for codec in [Compression[c.upper()] for c in args.codecs.split(",")]:
            t = f"c-{codec.name.lower()}"
            await b.topics.create(t, 1, {"cleanup.policy": "compact"})
            await fill(b, t, args.records, args.per, args.keys, codec, rnd)
            await asyncio.sleep(0.6)  # (quiet: the clean does not rest between slices)
            c0, w0 = time.process_time(), time.perf_counter()
            res = await LogCleaner(b).clean(b.topics.get(t), 0, force=True)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            mib = res.bytes_before / 2**20
            print(f"{codec.name:>5}: {args.records:,} records, {args.keys:,} keys, "
                  f"{mib:.1f} MiB offloaded: clean {wall:.2f} s wall, {cpu:.2f} s CPU = "
                  f"{args.records / cpu:,.0f} records/s, {mib / cpu:.1f} MiB/s per CPU "
                  f"second; {mib:.1f} -> {res.bytes_after / 2**20:.2f} MiB", flush=True)
            # again under a foreground load, against the same load alone
            base = await foreground(store, 3.0)
            await fill(b, t, args.records, args.per, args.keys, codec, rnd)
            done = {}

            async def clean(t: str = t, done: dict = done) -> None:
                w = time.perf_counter()
                await LogCleaner(b).clean(b.topics.get(t), 0, force=True)
                done["s"] = time.perf_counter() - w

            cleaning = asyncio.ensure_future(clean())
            during = await foreground(store, 3.0)
            await cleaning
            print(f"       1 KiB appends at {LOAD / 2**20:.0f} MiB/s: ack p50/p99 "
                  f"{pct(base, .5) * 1e3:.2f}/{pct(base, .99) * 1e3:.2f} ms alone, "
                  f"{pct(during, .5) * 1e3:.2f}/{pct(during, .99) * 1e3:.2f} ms while "
                  f"cleaning (the clean then took {done['s']:.1f} s)", flush=True)
        await b.stop()
    finally:
        if store is not None:
            await close_store(store)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    try:
        import uvloop  # (the server's loop when installed)
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
