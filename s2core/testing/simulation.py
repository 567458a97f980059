"""Deterministic simulation of s2core under faults and crashes.

One seed drives everything: which operations run concurrently (appends, some with a
fencing token or a match_seq_num, reads by seq_num and by timestamp, trims, fences,
stream moves; now and then a stream is deleted and created again, alone in its step), how
every replica, the segment store and the metadata store misbehave (failures before
applying, applied-but-lost responses, failed metadata reads, latency, a replica down or a
copy corrupted during recovery) and when the process "crashes" (every task of the store is cancelled mid-flight
and a new store recovers from the same backends). Time is virtual, so a run that spans
minutes of simulated time takes milliseconds, and the same seed gives the same trace.

Checked invariants: every acknowledged record is readable after recovery at its seq_num
with its body; no record appears twice; seq_nums are contiguous; nothing of a deleted
stream shows in a new one of the same name; the tail never goes back (against what
operations that finished before saw); timestamps never go back; a read by timestamp starts
at or before a record with that timestamp; the fencing token is the last fence's in the
stream. An operation failing with anything but an S2 error fails the run. Once the steps
are done, the faults stop and every stream must move to every channel (liveness: nothing a
fault left behind may keep a stream sealed or a channel fenced).

    python -m s2core.testing.simulation --seeds 1000          # the long run
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from dataclasses import dataclass, field

from s2core.channel import ChannelConfig
from s2core.clock import LoopClock
from s2core.errors import (
    AlreadyExists,
    FencingTokenMismatch,
    Indeterminate,
    S2Error,
    SeqNumMismatch,
    StreamNotFound,
)
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.records import AppendRecord, fence_record, trim_record
from s2core.store import ChannelSpec, StreamStore
from s2core.testing.faults import FaultyMetadataStore, FaultyObjectStore
from s2core.testing.virtual_loop import run_virtual

BASIN = "sim-basin-0"


class InvariantViolation(AssertionError):
    """The store broke one of the checked guarantees."""


@dataclass
class StreamModel:
    """What the simulated clients know about one stream."""

    acked: dict[int, bytes] = field(default_factory=dict)  # seq -> body
    trim_floor: int = 0        # from acknowledged trims: nothing below may be read
    maybe_trim: int = 0        # from every attempted trim: below it records may be gone
    max_tail: int = 0
    counter: int = 0
    fences: dict[int, str] = field(default_factory=dict)  # acked fence seq -> token
    min_counter: int = 0  # bodies numbered up to this belong to an earlier incarnation


class Simulation:
    """One seeded run."""

    def __init__(self, seed: int, steps: int = 60, crashes: int = 2) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.steps = steps
        self.crashes = crashes
        self.trace: list[str] = []
        p = self.rng.uniform(0.0, 0.15)
        pm = self.rng.choice([0.0, p / 3])
        self.metadata = FaultyMetadataStore(MemoryMetadataStore(),
                                            random.Random(self.rng.random()),
                                            fail_before=pm, lose_response=pm / 2,
                                            fail_reads=pm / 2)
        self.stores = {
            name: [FaultyObjectStore(MemoryObjectStore(f"{name}-r{i}"),
                                     random.Random(self.rng.random()),
                                     fail_before=p, lose_response=p / 2,
                                     latency=(0.0, 0.004))
                   for i in range(3)]
            for name in ("ch0", "ch1")
        }
        self.segments = FaultyObjectStore(MemoryObjectStore("segments"),
                                          random.Random(self.rng.random()),
                                          fail_before=p, lose_response=p / 2,
                                          latency=(0.0, 0.01))
        self.streams = {f"s{i}": StreamModel() for i in range(self.rng.randint(1, 4))}
        self.clock = LoopClock()

    def log(self, msg: str) -> None:
        self.trace.append(f"{asyncio.get_running_loop().time():.6f} {msg}")

    async def open_store(self) -> StreamStore:
        cfg = dict(chunk_target_bytes=self.rng.choice([64, 512, 4096]),
                   linger_s=self.rng.choice([0.0, 0.001, 0.005]),
                   max_inflight_chunks=self.rng.randint(1, 4),
                   offload_target_bytes=self.rng.choice([256, 2048, 16384]),
                   offload_interval_s=self.rng.choice([0.01, 0.05, 0.5]),
                   keep_in_memory_fraction=self.rng.choice([0.0, 0.5]),
                   own_segment_bytes=self.rng.choice([128, 1 << 20]),
                   section_max_bytes=self.rng.choice([300, 4 << 20]))
        specs = [ChannelSpec(name, reps, 2, ChannelConfig(**cfg))
                 for name, reps in self.stores.items()]
        while True:
            try:
                store = await StreamStore.open(self.metadata, self.segments, specs,
                                               clock=self.clock,
                                               rng=random.Random(self.rng.random()))
                break
            except S2Error as e:  # recovery met an unavailable replica: retry
                self.log(f"recovery retry: {type(e).__name__}")
                await asyncio.sleep(0.01)
        self.log("store open")
        return store

    async def run(self) -> list[str]:
        store = await self.open_store()
        await retrying(lambda: store.ensure_basin(BASIN))
        for name in self.streams:
            await create_stream(store, name)
        crash_at = sorted(self.rng.sample(range(1, self.steps), self.crashes))
        for step in range(self.steps):
            if step not in crash_at and self.rng.random() < 0.05:
                await self.recreate(store)  # alone: the model follows one incarnation
                continue
            tasks = [asyncio.ensure_future(self.random_op(store, step, k))
                     for k in range(self.rng.randint(1, 6))]
            if step in crash_at:
                await asyncio.sleep(self.rng.uniform(0, 0.01))
                self.log(f"crash at step {step}")
                crash(store, tasks)
                self.check_outcomes(await asyncio.gather(*tasks, return_exceptions=True))
                await self.damage_a_replica()
                store = await self.open_store()
                for reps in self.stores.values():
                    for r in reps:
                        r.set_down(False)
                await self.verify_all(store)
            else:
                self.check_outcomes(await asyncio.gather(*tasks, return_exceptions=True))
        await self.check_liveness(store)
        await self.verify_all(store)
        await store.close()
        store = await self.open_store()
        await self.verify_all(store)
        await store.close()
        return self.trace

    async def check_liveness(self, store: StreamStore) -> None:
        """With the faults turned off, every stream moves to each channel: nothing a fault
        left behind keeps a stream sealed or unmovable (seed 712306: a checkpoint version
        made stale by a lost answer failed every later move)."""
        faulty = [self.metadata, self.segments, *(r for reps in self.stores.values()
                                                  for r in reps)]
        saved = [(f.fail_before, f.lose_response) for f in faulty]
        fail_reads, self.metadata.fail_reads = self.metadata.fail_reads, 0.0
        for f in faulty:
            f.fail_before = f.lose_response = 0.0
        try:
            for name in sorted(self.streams):
                for dest in sorted(self.stores):
                    for attempt in range(3):
                        try:
                            await store.move_stream(BASIN, name, dest)
                            break
                        except S2Error as e:
                            self.log(f"liveness: move {name} -> {dest}: {e!r}")
                            if attempt == 2:
                                raise InvariantViolation(
                                    f"{name}: cannot be moved to {dest} with the faults "
                                    f"off: {e!r}") from e
            self.log("liveness: every stream moved to every channel")
        finally:
            for f, (fail, lose) in zip(faulty, saved):
                f.fail_before, f.lose_response = fail, lose
            self.metadata.fail_reads = fail_reads

    @staticmethod
    def check_outcomes(outcomes: list) -> None:
        """An operation may fail with an S2 error (it logs it) or be cancelled by a crash;
        anything else (a violated invariant, an assertion, a bug) fails the run."""
        for out in outcomes:
            if isinstance(out, BaseException) and \
                    not isinstance(out, (S2Error, asyncio.CancelledError)):
                raise out

    async def damage_a_replica(self) -> None:
        """While the process is down: flip a byte of one copy of a chunk that has another
        copy, and/or take one replica down for the recovery (a quorum stays readable)."""
        name = self.rng.choice(sorted(self.stores))
        reps = self.stores[name]
        if self.rng.random() < 0.5:
            listed = [set(await r.inner.list("wal/")) for r in reps]
            keys = sorted(k for k in set().union(*listed) if sum(k in x for x in listed) >= 2)
            if keys:
                key = self.rng.choice(keys)
                victim = self.rng.choice([i for i, x in enumerate(listed) if key in x])
                await reps[victim].corrupt(key)
                self.log(f"corrupted {key} on replica {victim}")
                return
        if self.rng.random() < 0.5:
            i = self.rng.randrange(len(reps))
            reps[i].set_down(True)
            self.log(f"replica {name}/{i} down for recovery")

    async def random_op(self, store: StreamStore, step: int, k: int) -> None:
        name = self.rng.choice(sorted(self.streams))
        m = self.streams[name]
        roll = self.rng.random()
        try:
            if roll < 0.55:
                await self.append(store, name, m)
            elif roll < 0.8:
                await self.read_check(store, name, m)
            elif roll < 0.86:
                await self.fence(store, name, m)
            elif roll < 0.93:
                tail = (await store.check_tail(BASIN, name)).seq_num
                target = self.rng.randint(0, tail)
                m.maybe_trim = max(m.maybe_trim, target)
                rec = trim_record(target)
                if self.rng.random() < 0.5:
                    rec.span = 0  # a trim that takes no seq_num (as the Kafka layer uses)
                ack = await store.append(BASIN, name, [rec])
                if rec.span:
                    m.acked[ack.start.seq_num] = None
                m.trim_floor = max(m.trim_floor, min(target, ack.end.seq_num))
                self.log(f"trim {name} -> {target} at {ack.start.seq_num}")
            else:
                dest = self.rng.choice(sorted(self.stores))
                await store.move_stream(BASIN, name, dest)
                self.log(f"move {name} -> {dest}")
        except S2Error as e:
            self.log(f"op on {name} failed: {type(e).__name__}")

    async def recreate(self, store: StreamStore) -> None:
        """Delete a stream and create one of the same name: nothing of the old one may
        show in the new one (offloads and purges of the old one run meanwhile)."""
        name = self.rng.choice(sorted(self.streams))
        old = self.streams[name]
        await retrying(lambda: store.delete_stream(BASIN, name), done_if=(StreamNotFound,))
        self.streams[name] = StreamModel(counter=old.counter, min_counter=old.counter)
        await create_stream(store, name)
        self.log(f"recreated {name}")

    async def fence(self, store: StreamStore, name: str, m: StreamModel) -> None:
        token = f"t{self.rng.randrange(1000)}"
        ack = await store.append(BASIN, name, [fence_record(token)])
        m.acked[ack.start.seq_num] = None
        m.fences[ack.start.seq_num] = token
        self.log(f"fence {name} {token} at {ack.start.seq_num}")

    async def append(self, store: StreamStore, name: str, m: StreamModel) -> None:
        before = m.max_tail  # acked or read before this append began
        n = self.rng.randint(1, 5)
        bodies = []
        for _ in range(n):
            m.counter += 1
            bodies.append(f"{name}:{m.counter}:".encode() + b"x" * self.rng.randint(0, 200))
        match = None
        if self.rng.random() < 0.2:
            match = (await store.check_tail(BASIN, name)).seq_num
        token = None
        if m.fences and self.rng.random() < 0.3:
            token = m.fences[max(m.fences)]  # as the writer that fenced last would
        try:
            ack = await store.append(BASIN, name, [AppendRecord(b) for b in bodies],
                                     match_seq_num=match, fencing_token=token)
        except SeqNumMismatch:
            self.log(f"append {name} match mismatch")
            return
        except FencingTokenMismatch:
            self.log(f"append {name} token mismatch")
            return
        if ack.end.seq_num - ack.start.seq_num != n:
            raise InvariantViolation(f"ack spans {ack.start.seq_num}..{ack.end.seq_num} for "
                                     f"{n} records")
        for i, b in enumerate(bodies):
            m.acked[ack.start.seq_num + i] = b
        self.check_tail(name, m, ack.tail.seq_num, before)
        self.log(f"append {name} {ack.start.seq_num}..{ack.end.seq_num}")

    def check_tail(self, name: str, m: StreamModel, tail: int, before: int) -> None:
        """`tail` was seen by an operation that began when the highest tail any finished
        operation had seen was `before`: it may not be lower. (Concurrent operations
        finish in any order, so one that began earlier may report a lower tail.)"""
        if tail < before:
            raise InvariantViolation(f"{name}: tail went back from {before} to {tail}")
        m.max_tail = max(m.max_tail, tail)

    async def read_check(self, store: StreamStore, name: str, m: StreamModel) -> None:
        before = m.max_tail
        start = self.rng.randint(0, max(m.max_tail, 1))
        batch = await store.read(BASIN, name, seq_num=start, count=self.rng.randint(1, 50),
                                 clamp=True)
        self.check_tail(name, m, batch.tail.seq_num, before)
        self.check_records(name, m, batch.records, batch.tail.seq_num)
        spanning = [r for r in batch.records if r.span]
        if spanning and self.rng.random() < 0.3:
            # by timestamp: the first record at or after a record's timestamp is that
            # record or an earlier one with the same timestamp (a span-0 command record
            # at the tail is not picked: a read from the tail's seq_num returns nothing)
            pick = self.rng.choice(spanning)
            at = await store.read(BASIN, name, timestamp=pick.timestamp, count=1, clamp=True)
            first = at.records[0] if at.records else None
            if pick.seq_num >= m.maybe_trim and (  # (else a trim may have removed it)
                    first is None or first.timestamp < pick.timestamp
                    or first.seq_num > pick.seq_num):
                raise InvariantViolation(
                    f"{name}: read at timestamp {pick.timestamp} (record {pick.seq_num}) "
                    f"gave {None if first is None else (first.seq_num, first.timestamp)}")
        self.log(f"read {name} @{start}: {len(batch.records)}")

    def check_records(self, name: str, m: StreamModel, records, tail: int) -> None:
        prev = None
        for r in records:
            if prev is not None and r.seq_num != prev.end_seq:
                raise InvariantViolation(f"{name}: seq_nums not contiguous: {prev.seq_num} "
                                         f"then {r.seq_num}")
            if r.end_seq > tail:
                raise InvariantViolation(f"{name}: record {r.seq_num} past tail {tail}")
            if prev is not None and r.timestamp < prev.timestamp:
                raise InvariantViolation(f"{name}: timestamp went back at {r.seq_num}: "
                                         f"{prev.timestamp} then {r.timestamp}")
            if not r.is_command() and int(r.body.split(b":")[1]) <= m.min_counter:
                raise InvariantViolation(f"{name}: seq {r.seq_num} has {r.body[:20]!r}, "
                                         "a record of the deleted stream of that name")
            want = m.acked.get(r.seq_num, r.body)
            if not r.is_command() and want is not None and want != r.body:
                raise InvariantViolation(f"{name}: seq {r.seq_num} has {r.body[:20]!r}, acked "
                                         f"{want[:20]!r}")
            prev = r

    async def verify_all(self, store: StreamStore) -> None:
        for name, m in sorted(self.streams.items()):
            await retrying(lambda: self.verify_stream(store, name, m))

    async def verify_stream(self, store: StreamStore, name: str, m: StreamModel) -> None:
        if True:
            before = m.max_tail
            tail = (await store.check_tail(BASIN, name)).seq_num
            self.check_tail(name, m, tail, before)
            got, seq = [], 0
            while True:
                batch = await store.read(BASIN, name, seq_num=seq, count=1000, clamp=True)
                if not batch.records:
                    break
                got.extend(batch.records)
                seq = batch.records[-1].end_seq
            self.check_records(name, m, got, tail)
            seen = {}
            for r in got:
                if not r.is_command():
                    key = r.body.split(b":x")[0][:32]
                    if key in seen:
                        raise InvariantViolation(f"{name}: duplicate {key!r} at {r.seq_num} and "
                                                 f"{seen[key]}")
                    seen[key] = r.seq_num
            if got and got[0].seq_num < m.trim_floor:
                raise InvariantViolation(f"{name}: read {got[0].seq_num} below the acked trim "
                                         f"point {m.trim_floor}")
            have = {r.seq_num for r in got}
            for seq_num in m.acked:
                if seq_num >= m.maybe_trim and seq_num not in have:
                    raise InvariantViolation(f"{name}: acked seq {seq_num} lost (tail {tail}, "
                                             f"trim floor {m.trim_floor})")
            # The token is the one of the last fence in the stream: acked ones, and ones of
            # unknown outcome that turn out to be there. Unknown unless that fence is at or
            # above every trim ever tried (a trimmed-away one may have been last).
            fences = {r.seq_num: r.body.decode() for r in got
                      if r.is_command() and r.headers[0][1] == b"fence"}
            fences.update(m.fences)
            top = max(fences) if fences else None
            if (top is None and m.maybe_trim == 0) or (top is not None and top >= m.maybe_trim):
                want = "" if top is None else fences[top]
                ch, st = await store._state(await store._handle(BASIN, name))
                # (a failed channel takes no appends: its live token does not matter)
                if st.durable_token != want or (ch.failed is None and st.token != want):
                    raise InvariantViolation(f"{name}: token {st.token!r} (durable "
                                             f"{st.durable_token!r}), last fence {want!r}")
            self.log(f"verified {name}: {len(got)} records, tail {tail}")


async def create_stream(store: StreamStore, name: str) -> None:
    await retrying(lambda: store.create_stream(BASIN, name,
                                               {"retention_policy": {"infinite": {}}}),
                   done_if=(AlreadyExists,))


async def retrying(fn, attempts: int = 20, done_if: tuple = ()):
    """Retry `fn` on retriable errors (a reader would), with virtual-time backoff. After
    an attempt of unknown outcome, an error in `done_if` on a later attempt means that
    attempt did apply (a create that finds the stream, a delete that does not)."""
    unknown = False
    for i in range(attempts):
        try:
            return await fn()
        except done_if:
            if not unknown:
                raise
            return None
        except S2Error as e:
            if not e.retriable or i == attempts - 1:
                raise
            unknown = unknown or isinstance(e, Indeterminate)
            await asyncio.sleep(0.01 * (i + 1))


def crash(store: StreamStore, client_tasks: list[asyncio.Task]) -> None:
    """Kill a store the way SIGKILL would: every task stops where it is; nothing flushes."""
    for t in client_tasks:
        t.cancel()
    for t in list(store._bg):
        t.cancel()
    for ch in store.channels.values():
        ch._closing = True
        for t in list(ch._tasks):
            t.cancel()
        ch.log._closed = True
        for t in list(ch.log._background):
            t.cancel()
        if ch.log._check_task:
            ch.log._check_task.cancel()
        if ch._linger:
            ch._linger.cancel()


def run_seed(seed: int, steps: int = 60, crashes: int = 2) -> list[str]:
    """Run one seed in virtual time; raises InvariantViolation on a broken guarantee."""
    return run_virtual(Simulation(seed, steps, crashes).run(), seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1000)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # injected faults make the store log a lot
    t0 = time.monotonic()
    for seed in range(args.first, args.first + args.seeds):
        try:
            run_seed(seed, args.steps)
        except Exception as e:
            print(f"seed {seed}: FAILED: {e!r}")
            return 1
    print(f"{args.seeds} seeds passed in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
