"""Background work on the loop in time slices, sections built a run at a time, and the
number of chunks a channel replicates at once."""
import asyncio

from s2core.channel import ChannelConfig
from s2core.clock import Slices
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.records import AppendRecord, SequencedRecord
from s2core.segment import SectionBuilder, build_section_parts, parse_section
from s2core.store import ChannelSpec, StreamStore
from s2core.wal.locallog import LocalLogReplica


class StepClock:
    """monotonic() advances by `step` on every call; sleeps are recorded, not waited."""

    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step
        self.sleeps: list[float] = []

    def now_ms(self) -> int:
        return int(self.t * 1000)

    def monotonic(self) -> float:
        self.t += self.step
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


async def _rests(clock: StepClock, s: Slices, ticks: int) -> list[float]:
    clock.sleeps.clear()
    for _ in range(ticks):
        await s.tick()
    return list(clock.sleeps)


async def test_slices_rest_after_each_budget_unless_urgent():
    clock = StepClock(0.0001)
    urgent = [False]
    s = Slices(clock, budget_s=0.0005, rest_s=0.001, urgent=lambda: urgent[0])
    # a look at the clock per tick plus one after each rest: a rest every 5 ticks
    assert await _rests(clock, s, 30) == [0.001] * 5
    urgent[0] = True
    assert await _rests(clock, s, 30) == []  # urgent: a bare yield, no rest


async def test_slices_do_not_rest_when_quiet():
    clock = StepClock(0.0001)
    quiet = [True]
    s = Slices(clock, budget_s=0.0005, rest_s=0.001, quiet=lambda: quiet[0])
    assert await _rests(clock, s, 30) == []  # nothing to leave the loop to
    quiet[0] = False
    rests = await _rests(clock, s, 30)
    assert len(rests) >= 4 and set(rests) == {0.001}


async def test_slices_rest_less_while_behind():
    clock = StepClock(0.0001)
    behind = [True]
    s = Slices(clock, budget_s=0.0005, rest_s=0.002, behind=lambda: behind[0])
    assert await _rests(clock, s, 12) == [0.0005] * 2  # a quarter of the rest
    behind[0] = False
    assert await _rests(clock, s, 12) == [0.002] * 2


async def test_default_slices_leave_most_of_the_loop_to_appends():
    s = Slices(StepClock(0.0))
    assert s.budget_s / (s.budget_s + s.rest_s) <= 1 / 8


async def test_slices_never_yield_while_time_stands_still():
    clock = StepClock(0.0)  # a virtual-time loop: no time passes during CPU work
    s = Slices(clock)
    other_ran = []

    async def other():
        other_ran.append(True)

    t = asyncio.ensure_future(other())
    for _ in range(1000):
        await s.tick()
    assert not other_ran and clock.sleeps == []  # deterministic: no interleaving added
    await t


async def test_free_empties_big_containers_a_piece_at_a_time():
    clock = StepClock(0.0001)
    s = Slices(clock, budget_s=0.0, rest_s=0.001)  # every tick rests: count the pieces
    big = list(range(1000))
    table = {i: [i] * 600 if i == 3 else i for i in range(300)}  # one big list inside
    nested = table[3]
    await s.free(big, table)
    assert big == [] and table == {} and nested == []
    # 1000 items: 4 pieces; 300 items: 2 pieces, plus 3 for the list of 600 inside
    assert len(clock.sleeps) == 4 + 2 + 3


async def test_eviction_frees_thousands_of_chunks_in_rounds():
    """An offload frees thousands of chunks; eviction takes them a round at a time (no
    long stall) and still frees everything offloaded, of every stream."""
    store = await StreamStore.open(MemoryMetadataStore(), MemoryObjectStore("seg"),
                                   [ChannelSpec("ch0", [MemoryObjectStore("r")], 1,
                                                ChannelConfig(offload_interval_s=60,
                                                              keep_in_memory_fraction=0.0))])
    try:
        await store.ensure_basin("test-basin")
        names = [f"s{i}" for i in range(300)]
        for n in names:
            await store.create_stream("test-basin", n)
        for _ in range(8):  # 300 streams x 8 rounds: chunks with 2,400 stream entries
            await asyncio.gather(*(store.append("test-basin", n, [AppendRecord(b"y" * 50)])
                                   for n in names))
        ch = store.channels["ch0"]
        while await ch.offloader.offload_once():
            pass
        assert sum(len(mc.ends) for mc in ch.mem_chunks) > 2 * 1024
        await ch.offloader.evict()
        assert ch.mem_bytes == 0 and not ch.mem_chunks
        assert all(not st.mem_recs for st in ch.streams.values())
        batch = await store.read("test-basin", "s123", seq_num=0)
        assert [r.body for r in batch.records] == [b"y" * 50] * 8
    finally:
        await store.close()


def test_section_built_in_runs_equals_one_build():
    uid = bytes(range(16))
    recs = [SequencedRecord(10 + 3 * i, 1000 + i, ((b"h", bytes([i])),) if i % 3 else (),
                            bytes([i % 251]) * (i % 50), 3) for i in range(200)]
    whole = b"".join(build_section_parts(uid, recs))
    b = SectionBuilder(uid)
    for k in range(0, len(recs), 7):
        b.add(recs[k:k + 7])
    b.add([])
    assert b"".join(b.finish()) == whole and b.nbytes == len(whole)
    sec = parse_section(whole)
    assert (sec.first_seq, sec.end_seq, len(sec)) == (10, 10 + 3 * 200, 200)
    assert sec.record(57).body == recs[57].body and sec.record(57).headers == recs[57].headers


async def _channel_inflight(replicas, cfg: ChannelConfig) -> int:
    store = await StreamStore.open(MemoryMetadataStore(), MemoryObjectStore("seg"),
                                   [ChannelSpec("ch0", replicas, 1, cfg)])
    try:
        await store.ensure_basin("test-basin")
        await store.create_stream("test-basin", "s")
        ack = await store.append("test-basin", "s", [AppendRecord(b"x")] * 3)
        assert ack.end.seq_num == 3
        return store.channels["ch0"].max_inflight
    finally:
        await store.close()


async def test_inflight_chunks_automatic_per_replica_kind(tmp_path):
    assert await _channel_inflight([LocalLogReplica(tmp_path / "a")], ChannelConfig()) == 1
    assert await _channel_inflight([MemoryObjectStore("r")], ChannelConfig()) == 4
    explicit = ChannelConfig(max_inflight_chunks=3)
    assert await _channel_inflight([LocalLogReplica(tmp_path / "b")], explicit) == 3


async def _thin_store(interval_s: float):
    seg = MemoryObjectStore("seg")
    cfg = ChannelConfig(offload_target_bytes=4096, offload_min_stream_bytes=1024,
                        offload_interval_s=interval_s)
    store = await StreamStore.open(MemoryMetadataStore(), seg,
                                   [ChannelSpec("ch0", [MemoryObjectStore("r")], 1, cfg)])
    await store.ensure_basin("test-basin")
    for i in range(100):
        await store.create_stream("test-basin", f"s{i}")
    return store, seg


async def _append_round(store) -> None:
    await asyncio.gather(*(store.append("test-basin", f"s{i}", [AppendRecord(b"x" * 100)])
                           for i in range(100)))


async def test_thin_offloads_wait_for_bytes_per_stream():
    """100 streams with one small record each are past the offload target but far below
    1 KiB per stream: the offload waits (to 8 x the target here), then takes them all."""
    store, seg = await _thin_store(interval_s=60)
    try:
        off = store.channels["ch0"].offloader
        await _append_round(store)
        assert 4096 < off.pending_bytes < off._batch_bytes() == 8 * 4096
        await asyncio.sleep(0.1)
        assert len(off.queue) > 0 and await seg.list("segments/") == []
        await _append_round(store)
        for _ in range(100):
            if not off.queue:
                break
            await asyncio.sleep(0.01)
        assert not off.queue and off._queued_streams == {}
        assert len(await seg.list("segments/")) == 1  # one shared object, 100 sections
        batch = await store.read("test-basin", "s7", seq_num=0)
        assert [r.body for r in batch.records] == [b"x" * 100] * 2
    finally:
        await store.close()


async def test_thin_offloads_still_run_every_interval():
    store, seg = await _thin_store(interval_s=0.05)
    try:
        off = store.channels["ch0"].offloader
        await _append_round(store)
        for _ in range(100):
            if not off.queue:
                break
            await asyncio.sleep(0.01)
        assert not off.queue and await seg.list("segments/") != []
    finally:
        await store.close()


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t


def test_segment_pace_follows_the_ingest_rate_and_yields_to_urgency():
    from types import SimpleNamespace

    from s2core.offload import PACE_FACTOR, PACE_FLOOR, Offloader
    clock = _Clock()
    ch = SimpleNamespace(clock=clock, config=ChannelConfig(), mem_bytes=0)
    off = Offloader(ch, MemoryObjectStore("seg"))

    def at(t: float) -> None:  # a chunk came in just now (appends go on)
        clock.t = off._noted_at = t

    off._noted += 20 * 2**20  # 20 MiB came in during the first second
    at(1.0)
    assert off._segment_pace() == PACE_FACTOR * 20 * 2**20
    at(2.0)  # nothing since: the burst still counts half, then the floor
    assert off._segment_pace() == PACE_FACTOR * 10 * 2**20
    at(3.0)
    assert off._segment_pace() == PACE_FLOOR
    ch.mem_bytes = int(ch.config.memory_bound_bytes * 0.9)  # appends close to waiting
    assert off._segment_pace() is None
    ch.mem_bytes = 0
    off.pending_bytes = 2 * off._batch_bytes()  # more than a batch waits
    assert off._segment_pace() is None
    off.pending_bytes = 0
    assert off._segment_pace() == PACE_FLOOR
    off._stopping = True
    assert off._segment_pace() is None


def test_segment_pieces_go_at_full_speed_while_no_chunk_comes():
    """Asked piece by piece (in the put's thread): a put started in a quiet spell slows
    down as soon as appends resume."""
    import time
    from types import SimpleNamespace

    from s2core.offload import QUIET_S, Offloader
    ch = SimpleNamespace(clock=_Clock(), config=ChannelConfig(), mem_bytes=0)
    off = Offloader(ch, MemoryObjectStore("seg"))
    pace = off._piece_pace(5e6)
    off._noted_wall = time.monotonic() - 10 * QUIET_S
    assert pace() is None
    off._noted_wall = time.monotonic()  # a chunk came
    assert pace() == 5e6


async def test_offload_passes_rest_only_while_appends_come_in():
    """A pass leaves the loop to appends; with none coming, it runs flat out (a backlog
    of 10,000 streams took 6.5 s to offload on an idle loop, resting)."""
    from types import SimpleNamespace

    from s2core.offload import QUIET_S, Offloader
    clock = StepClock(0.0001)
    ch = SimpleNamespace(clock=clock, config=ChannelConfig(), mem_bytes=0)
    off = Offloader(ch, MemoryObjectStore("seg"))
    s = off._slices()
    off._noted_at = clock.t
    assert len(await _rests(clock, s, 60)) >= 2  # appends came in: it rests
    clock.t += QUIET_S * 2
    assert await _rests(clock, s, 60) == []  # quiet: bare yields
    off._noted_at = clock.t
    assert len(await _rests(clock, s, 60)) >= 2


async def test_offload_paces_segment_writes_to_a_local_disk(tmp_path, monkeypatch):
    from s2core import offload
    from s2core.objstore.localdir import LocalDirObjectStore
    monkeypatch.setattr(offload, "QUIET_S", 60.0)  # (a slow machine: appends still count)
    paces = []

    class Spy(LocalDirObjectStore):
        async def put(self, key, data, *, if_absent=False, pace=None):
            paces.append(pace() if callable(pace) else pace)  # (asked per piece)
            await super().put(key, data, if_absent=if_absent, pace=pace)

    seg = Spy(tmp_path / "seg")
    cfg = ChannelConfig(offload_target_bytes=64 * 1024, offload_interval_s=0.05)
    store = await StreamStore.open(MemoryMetadataStore(), seg,
                                   [ChannelSpec("ch0", [MemoryObjectStore("r")], 1, cfg)])
    try:
        await store.ensure_basin("test-basin")
        await store.create_stream("test-basin", "s")
        off = store.channels["ch0"].offloader
        for r in range(3):  # a batch at a time (more than two waiting: at full speed)
            for i in range(45):
                await store.append("test-basin", "s", [AppendRecord(bytes([i]) * 1500)])
            for _ in range(200):
                if not off.queue and len(paces) > r:
                    break
                await asyncio.sleep(0.01)
        assert len(paces) >= 3 and all(p is not None and p >= 16 * 2**20 for p in paces)
        batch = await store.read("test-basin", "s", seq_num=0)
        assert [r.body for r in batch.records][:3] == [bytes([i]) * 1500 for i in range(3)]
    finally:
        await store.close()
