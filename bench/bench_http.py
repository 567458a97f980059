"""What the HTTP API costs: appends through s2-sdk vs the same appends in-process.

    python bench/bench_http.py [--seconds 3] [--concurrency 16] [--record-bytes 100]

Runs, in one go, on memory backends (so storage costs next to nothing and the HTTP layer
shows): in-process `StreamStore.append` (sequential and concurrent), then the SDK's unary
`append` (sequential and concurrent) and append sessions (one pipelined session, and
`concurrency` sessions) against a server in a subprocess (its own core, as deployed).
Prints appends/s, MB/s and ack latency p50/p99 per case, and each HTTP case's ratio to its
in-process counterpart.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from s2core.channel import ChannelConfig
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.records import AppendRecord
from s2core.store import ChannelSpec, StreamStore

BASIN = "bench-basin"


async def open_store() -> StreamStore:
    store = await StreamStore.open(
        MemoryMetadataStore(), MemoryObjectStore("segments"),
        [ChannelSpec("ch0", [MemoryObjectStore(f"r{i}") for i in range(3)], 2,
                     ChannelConfig())])
    await store.ensure_basin(BASIN)
    return store


async def serve_forever() -> None:
    """Subprocess mode: serve a fresh store on a free port, print the port, run until EOF."""
    from s2core.http import create_app, serve_http
    from s2core.http.server import bind_socket
    store = await open_store()
    sock = bind_socket()
    print(sock.getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent closes our stdin to stop us
    await serve_http(create_app(store), "127.0.0.1", 0, stop, sock=sock)
    await store.close()


class Result:
    """Latencies (seconds) of acknowledged appends over a wall-clock span."""

    def __init__(self, name: str, latencies: list[float], elapsed: float, nbytes: int) -> None:
        self.name, self.latencies, self.elapsed, self.nbytes = name, latencies, elapsed, nbytes

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def pct(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[int(q) - 1] * 1000

    def row(self, base: Result | None) -> str:
        ratio = ""
        if base is not None:
            ratio = (f"  thr x{self.rate / base.rate:5.2f}  p50 x{self.pct(50) / base.pct(50):5.2f}"
                     f"  p99 x{self.pct(99) / base.pct(99):5.2f}  vs {base.name}")
        return (f"{self.name:<26}{self.rate:>10.0f}/s {self.nbytes / self.elapsed / 1e6:>7.2f} MB/s"
                f"  p50 {self.pct(50):6.2f} ms  p99 {self.pct(99):6.2f} ms{ratio}")


async def drive(name: str, workers: int, seconds: float, body_len: int,
                append: Callable[[int], Awaitable[None]]) -> Result:
    """`workers` loops each awaiting one `append(worker)` after another, for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(w: int) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await append(w)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for w in range(workers):
            tg.create_task(loop(w))
    elapsed = time.perf_counter() - t0
    return Result(name, latencies, elapsed, len(latencies) * body_len)


async def in_process(args) -> tuple[Result, Result]:
    store = await open_store()
    body = b"x" * args.record_bytes
    for w in range(args.concurrency):
        await store.create_stream(BASIN, f"s{w}")

    async def one(w: int) -> None:
        await store.append(BASIN, f"s{w}", [AppendRecord(body)])

    await drive("warmup", 1, 0.3, len(body), one)
    seq = await drive("core sequential", 1, args.seconds, len(body), one)
    conc = await drive(f"core x{args.concurrency}", args.concurrency, args.seconds, len(body), one)
    await store.close()
    return seq, conc


async def through_sdk(args, port: int) -> list[Result]:
    from s2_sdk import S2, AppendInput, Endpoints, Record
    url = f"http://127.0.0.1:{port}"
    body = b"x" * args.record_bytes
    out = []
    async with S2("bench", endpoints=Endpoints(account=url, basin=url)) as s2:
        basin = s2.basin(BASIN)
        streams = [basin.stream(f"s{w}") for w in range(args.concurrency)]
        for s in streams:
            await basin.create_stream(s.name)

        async def unary(w: int) -> None:
            await streams[w].append(AppendInput(records=[Record(body=body)]))

        await drive("warmup", 1, 0.3, len(body), unary)
        out.append(await drive("sdk unary sequential", 1, args.seconds, len(body), unary))
        out.append(await drive(f"sdk unary x{args.concurrency}", args.concurrency,
                               args.seconds, len(body), unary))
        out.append(await session_case("sdk session, 1 in flight", streams[:1], args, body, 1))
        out.append(await session_case("sdk session, pipelined", streams[:1], args, body, 64))
        out.append(await session_case(f"sdk sessions x{args.concurrency} pipel.", streams, args,
                                      body, 64))
    return out


async def session_case(name: str, streams, args, body: bytes, inflight: int) -> Result:
    """Each stream gets a session fed as fast as it takes submissions, with up to `inflight`
    batches unacknowledged; latency is from submit to ack."""
    from s2_sdk import AppendInput, Record
    latencies: list[float] = []
    deadline = time.perf_counter() + args.seconds

    async def feed(stream) -> None:
        async with stream.append_session(max_unacked_batches=inflight) as session:
            pending = []
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                ticket = await session.submit(AppendInput(records=[Record(body=body)]))
                if inflight == 1:
                    await ticket
                    latencies.append(time.perf_counter() - t0)
                    continue
                pending.append((t0, asyncio.ensure_future(ticket)))
                while pending and pending[0][1].done():
                    t, fut = pending.pop(0)
                    fut.result()
                    latencies.append(time.perf_counter() - t)  # upper bound: seen late
            for t, fut in pending:
                await fut
                latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for s in streams:
            tg.create_task(feed(s))
    elapsed = time.perf_counter() - t0
    return Result(name, latencies, elapsed, len(latencies) * len(body))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--record-bytes", type=int, default=100)
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default=default_loop(),
                    help="event loop of both sides (default: uvloop when installed, as the "
                         "server runs it)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        await serve_forever()
        return
    core_seq, core_conc = await in_process(args)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--serve", "--loop", args.loop,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        port = int(await proc.stdout.readline())
        http = await through_sdk(args, port)
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 15)
    print(f"appends of 1 record x {args.record_bytes} B, {args.seconds:g} s per case, "
          f"memory backends, server in a subprocess, {args.loop} ({os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f})")
    print(core_seq.row(None))
    print(core_conc.row(None))
    unary_seq, unary_conc, sess_one, sess_pipe, sess_many = http
    print(unary_seq.row(core_seq))
    print(unary_conc.row(core_conc))
    print(sess_one.row(core_seq))
    print(sess_pipe.row(core_seq))
    print(sess_many.row(core_conc))


def default_loop() -> str:
    try:
        import uvloop  # noqa: F401
        return "uvloop"
    except ImportError:
        return "asyncio"


if __name__ == "__main__":
    if "--loop" in sys.argv and sys.argv[sys.argv.index("--loop") + 1] == "asyncio":
        asyncio.run(main())
    elif default_loop() == "uvloop" or "--loop" in sys.argv:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
