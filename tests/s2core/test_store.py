"""The stream store API over memory backends: S2 semantics end to end."""
import asyncio

import pytest

from s2core.errors import (
    AlreadyExists, BasinNotFound, FencingTokenMismatch, InvalidArgument, LimitExceeded,
    ReadPastTail, Sealed, SeqNumMismatch, StreamNotFound,
)
from s2core.records import AppendRecord, fence_record, trim_record

B = "test-basin"


def recs(*bodies, **kw):
    return [AppendRecord(body=b, **kw) for b in bodies]


async def test_basins(store):
    await store.create_basin("other-basin", {"create_stream_on_append": True})
    with pytest.raises(AlreadyExists):
        await store.create_basin("other-basin")
    with pytest.raises(InvalidArgument):
        await store.create_basin("Bad_Name")
    with pytest.raises(InvalidArgument):
        await store.create_basin("short")
    names = [b.name for b in (await store.list_basins())[0]]
    assert names == ["other-basin", "test-basin"]
    page, more = await store.list_basins(limit=1)
    assert [b.name for b in page] == ["other-basin"] and more
    cfg = await store.get_basin_config("other-basin")
    assert cfg.create_stream_on_append is True
    cfg = await store.reconfigure_basin("other-basin", {"create_stream_on_append": False})
    assert cfg.create_stream_on_append is False
    await store.create_stream("other-basin", "s")
    await store.delete_basin("other-basin")
    with pytest.raises(BasinNotFound):
        await store.get_basin_config("other-basin")


async def test_streams_create_list_config_delete(store):
    for n in ["a/1", "a/2", "b/1"]:
        await store.create_stream(B, n)
    with pytest.raises(AlreadyExists):
        await store.create_stream(B, "a/1")
    page, more = await store.list_streams(B, prefix="a/")
    assert [s.name for s in page] == ["a/1", "a/2"] and not more
    page, more = await store.list_streams(B, limit=2)
    assert [s.name for s in page] == ["a/1", "a/2"] and more
    page, more = await store.list_streams(B, start_after="a/2")
    assert [s.name for s in page] == ["b/1"]
    cfg = await store.reconfigure_stream(B, "a/1", {"retention_policy": {"infinite": {}}})
    assert cfg.retention_age_s is None
    assert (await store.get_stream_config(B, "a/1")).retention_age_s is None
    with pytest.raises(InvalidArgument):
        await store.reconfigure_stream(B, "a/1", {"retention_policy": {"age": 0}})
    with pytest.raises(InvalidArgument):
        await store.reconfigure_stream(B, "a/1", {"bogus": 1})
    await store.append(B, "a/1", recs(b"x"))
    await store.delete_stream(B, "a/1")
    with pytest.raises(StreamNotFound):
        await store.check_tail(B, "a/1")
    await store.create_stream(B, "a/1")
    assert (await store.check_tail(B, "a/1")).seq_num == 0  # a new stream, not the old data
    with pytest.raises(InvalidArgument):
        await store.create_stream(B, "")


async def test_append_read_positions(store):
    await store.create_stream(B, "s")
    ack = await store.append(B, "s", recs(b"a", b"b", b"c"))
    assert (ack.start.seq_num, ack.end.seq_num, ack.tail.seq_num) == (0, 3, 3)
    ack = await store.append(B, "s", recs(b"d"), match_seq_num=3)
    assert ack.start.seq_num == 3
    with pytest.raises(SeqNumMismatch) as e:
        await store.append(B, "s", recs(b"e"), match_seq_num=3)
    assert e.value.tail == 4
    batch = await store.read(B, "s", seq_num=1, count=2)
    assert [r.body for r in batch.records] == [b"b", b"c"]
    assert batch.tail.seq_num == 4
    batch = await store.read(B, "s", tail_offset=1)
    assert [r.body for r in batch.records] == [b"d"]
    assert (await store.read(B, "s", seq_num=4)).records == []
    with pytest.raises(ReadPastTail) as e:
        await store.read(B, "s", seq_num=5)
    assert e.value.tail_seq_num == 4
    assert (await store.read(B, "s", seq_num=99, clamp=True)).records == []
    batch = await store.read(B, "s", seq_num=0, max_bytes=20)
    assert [r.body for r in batch.records] == [b"a", b"b"]  # 9 metered bytes each


async def test_timestamps(store):
    await store.create_stream(B, "t", {"timestamping": {"mode": "client-prefer",
                                                         "uncapped": True},
                                       "retention_policy": {"infinite": {}}})
    await store.append(B, "t", [AppendRecord(b"1", timestamp=100),
                                AppendRecord(b"2", timestamp=50),
                                AppendRecord(b"3", timestamp=300)])
    batch = await store.read(B, "t", seq_num=0)
    assert [r.timestamp for r in batch.records] == [100, 100, 300]  # kept monotonic
    batch = await store.read(B, "t", timestamp=101)
    assert [r.body for r in batch.records] == [b"3"]
    batch = await store.read(B, "t", seq_num=0, until=300)
    assert [r.body for r in batch.records] == [b"1", b"2"]
    await store.create_stream(B, "req", {"timestamping": {"mode": "client-require"}})
    with pytest.raises(InvalidArgument):
        await store.append(B, "req", recs(b"x"))
    await store.create_stream(B, "capped")
    now = store.clock.now_ms()
    await store.append(B, "capped", [AppendRecord(b"x", timestamp=now + 10**9)])
    r = (await store.read(B, "capped", seq_num=0)).records[0]
    assert r.timestamp <= store.clock.now_ms()


async def test_fence_and_trim(store):
    await store.create_stream(B, "f")
    await store.append(B, "f", recs(b"0", b"1", b"2", b"3"))
    await store.append(B, "f", [fence_record("owner-1")])
    with pytest.raises(FencingTokenMismatch) as e:
        await store.append(B, "f", recs(b"x"), fencing_token="owner-2")
    assert e.value.current == "owner-1"
    ack = await store.append(B, "f", recs(b"x"), fencing_token="owner-1")
    assert ack.start.seq_num == 5


async def test_fence_no_token_given_is_unchecked(store):
    await store.create_stream(B, "f2")
    await store.append(B, "f2", [fence_record("tok")])
    await store.append(B, "f2", recs(b"x"))
    await store.append(B, "f2", recs(b"y"), fencing_token="tok")
    await store.append(B, "f2", [trim_record(2)], fencing_token="tok")
    batch = await store.read(B, "f2", seq_num=0)
    assert batch.records[0].seq_num == 2
    assert await store.first_seq(B, "f2") == 2
    with pytest.raises(InvalidArgument):
        await store.append(B, "f2", [AppendRecord(b"x", headers=[(b"", b"bogus")])])
    with pytest.raises(InvalidArgument):
        await store.append(B, "f2", [AppendRecord(b"short", headers=[(b"", b"trim")])])


async def test_a_checkpoint_holds_only_durable_fences(env):
    """An offload writes a stream's checkpoint while a fence is still being replicated:
    the checkpoint keeps the token of durable records, so when the fence never becomes
    durable (a crash), the old token still holds after recovery."""
    from s2core.testing.simulation import crash

    store = await env.open()
    await store.create_stream(B, "tok")
    await store.append(B, "tok", [fence_record("old")])
    await store.append(B, "tok", recs(b"x" * 5000))
    ch = store.channels["ch0"]
    stuck = asyncio.Event()
    real_puts = [r.put for r in env.replicas]

    async def hang(*args, **kwargs):
        await stuck.wait()

    for r in env.replicas:
        r.put = hang  # from now on no chunk reaches any replica
    fence = asyncio.ensure_future(store.append(B, "tok", [fence_record("new")]))
    await asyncio.sleep(0.01)
    assert not fence.done()
    await ch.offloader.offload_once()  # rewrites the checkpoint of "tok"
    crash(store, [fence])
    await asyncio.gather(fence, return_exceptions=True)
    for r, put in zip(env.replicas, real_puts):
        r.put = put
    store = await env.open()
    ack = await store.append(B, "tok", recs(b"y"), fencing_token="old")
    assert ack.start.seq_num == 2, "the unreplicated fence left no record and no effect"
    await store.close()


async def test_a_failed_open_stops_the_channels_it_opened(env):
    """The second channel cannot recover (no replica answers): the open fails and the
    first channel's background work does not outlive it."""
    from s2core.errors import Unavailable

    env.extra_channels.append("ch1")
    env.specs()  # makes ch1's replicas

    async def down(*args, **kwargs):
        raise Unavailable("down")

    for r in env.extra_replicas["ch1"]:
        r.list = down
    with pytest.raises(Unavailable):
        await env.open()
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() if "Offloader.run" in repr(t.get_coro())]
    assert left == []


async def test_an_offload_whose_publish_fails_is_redone_whole(env):
    """The metadata batch of an offload fails (metadata unreachable): the retry must
    offload the same records again, not skip them as if they had been published."""
    from s2core.errors import Unavailable

    failing = [False]
    real = env.metadata.write_batch

    async def write_batch(ops):
        if failing[0] and any(op.key.startswith("ckpt/") for op in ops):
            failing[0] = False
            raise Unavailable("metadata unreachable")
        return await real(ops)

    env.metadata.write_batch = write_batch
    store = await env.open()
    await store.create_stream(B, "pub")
    failing[0] = True
    for i in range(60):
        await store.append(B, "pub", recs(b"%03d" % i + b"." * 100))
    ch = store.channels["ch0"]
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not failing[0] and not ch.offloader.queue:
            break
    assert not failing[0], "the publish failed once"
    assert not ch.offloader.queue
    ch.config.keep_in_memory_fraction = 0.0
    await ch.offloader.evict()
    batch = await store.read(B, "pub", seq_num=0, count=1000)
    assert [r.body[:3] for r in batch.records] == [b"%03d" % i for i in range(60)]
    await store.close()


async def test_a_fenced_store_still_closes(env):
    """Another process took the channel over: appends fail with Fenced, and closing the
    fenced store returns (it waited forever for writes that could not finish)."""
    from s2core.errors import Fenced, Indeterminate

    a = await env.open()
    await a.create_stream(B, "fz")
    await a.append(B, "fz", recs(b"1"))
    b = await env.open()  # takes the channels over: a is fenced
    with pytest.raises((Fenced, Indeterminate)):
        await a.append(B, "fz", recs(b"2"))
    await asyncio.wait_for(a.close(), 5)
    assert [r.body for r in (await b.read(B, "fz", seq_num=0)).records] == [b"1"]
    await b.close()


async def test_limits(store):
    await store.create_stream(B, "l")
    with pytest.raises(LimitExceeded):
        await store.append(B, "l", recs(*[b"x"] * 1001))
    with pytest.raises(LimitExceeded):
        await store.append(B, "l", recs(b"x" * (1024 * 1024)))
    with pytest.raises(InvalidArgument):
        await store.append(B, "l", [])
    assert (await store.check_tail(B, "l")).seq_num == 0
    with pytest.raises(StreamNotFound):
        await store.append(B, "missing", recs(b"x"))


async def test_spanning_records(store):
    await store.create_stream(B, "k")
    ack = await store.append(B, "k", [AppendRecord(b"batch-of-5", span=5)])
    assert (ack.start.seq_num, ack.end.seq_num) == (0, 5)
    await store.append(B, "k", [AppendRecord(b"batch-of-3", span=3)])
    batch = await store.read(B, "k", seq_num=6)  # the middle of the second record
    assert [(r.seq_num, r.span) for r in batch.records] == [(5, 3)]
    batch = await store.read(B, "k", seq_num=2)
    assert [r.seq_num for r in batch.records] == [0, 5]


async def test_offload_recovery_and_segments(env):
    store = await env.open()
    await store.create_stream(B, "big")
    for i in range(200):
        await store.append(B, "big", recs(b"%05d" % i + b"." * 100))
    await asyncio.sleep(0.2)
    assert await env.segments.list("segments/"), "offload wrote segment objects"
    ch = store.channels["ch0"]
    st = ch.streams[next(iter(ch.streams))]
    assert st.offloaded_upto > 0
    ch.offloader.evict.__self__.channel.config.keep_in_memory_fraction = 0.0
    await ch.offloader.evict()
    batch = await store.read(B, "big", seq_num=3, count=5)
    assert [r.body[:5] for r in batch.records] == [b"%05d" % i for i in range(3, 8)]
    await store.close()
    store = await env.open()
    batch = await store.read(B, "big", seq_num=0, count=1000)
    assert [r.seq_num for r in batch.records] == list(range(200))
    assert (await store.append(B, "big", recs(b"after"))).start.seq_num == 200
    await store.close()


async def test_an_offload_writes_its_segment_objects_concurrently(env):
    """The segment objects of one offload are written several at a time (at most
    PUTS_AT_ONCE): one at a time, offload fell behind Kafka producers and appends waited
    for memory. Every object is complete before the catalog points at it."""
    from s2core.offload import PUTS_AT_ONCE

    env.cfg.update(own_segment_bytes=1024, offload_target_bytes=1 << 20,
                   offload_interval_s=3600)
    real_put = env.segments.put
    now = [0]
    peak = [0]

    async def slow_put(key, data, **kw):
        now[0] += 1
        peak[0] = max(peak[0], now[0])
        try:
            await asyncio.sleep(0.02)
            await real_put(key, data, **kw)
        finally:
            now[0] -= 1

    env.segments.put = slow_put
    store = await env.open()
    names = [f"s{i}" for i in range(3 * PUTS_AT_ONCE)]
    for name in names:
        await store.create_stream(B, name)
        await store.append(B, name, recs(*[name.encode() * 200] * 8))
    ch = store.channels["ch0"]
    t0 = asyncio.get_running_loop().time()
    assert await ch.offloader.offload_once()
    took = asyncio.get_running_loop().time() - t0
    assert peak[0] == PUTS_AT_ONCE
    assert took < 0.02 * len(names) * 0.6, took
    assert len(await env.segments.list("segments/")) == len(names)
    ch.config.keep_in_memory_fraction = 0.0
    await ch.offloader.evict()
    for name in names:
        batch = await store.read(B, name, seq_num=0, count=100)
        assert [r.body for r in batch.records] == [name.encode() * 200] * 8
    await store.close()


async def test_a_lease_check_that_cannot_read_metadata_waits_instead_of_failing(env):
    """The lease read after a chunk's quorum fails (metadata unreachable for a moment):
    the ack waits for a read that works. It used to fail the channel for good."""
    from s2core.errors import Unavailable

    store = await env.open()
    await store.create_stream(B, "s")
    real_get = env.metadata.get
    failures = [0]

    async def get(key):
        if key.startswith("channel/") and failures[0] < 4:
            failures[0] += 1
            raise Unavailable("metadata unreachable")
        return await real_get(key)

    env.metadata.get = get
    ack = await store.append(B, "s", recs(b"through a blip"))
    assert failures[0] == 4 and ack.start.seq_num == 0
    ch = store.channels["ch0"]
    assert ch.failed is None
    assert (await store.append(B, "s", recs(b"after"))).start.seq_num == 1
    await store.close()


async def test_follow_heartbeats_and_limits(store):
    await store.create_stream(B, "fo")
    got = []

    async def follow():
        async for batch in store.read_session(B, "fo", seq_num=0, count=3, heartbeat_s=0.02):
            got.append([r.body for r in batch.records])

    t = asyncio.create_task(follow())
    await asyncio.sleep(0.07)
    await store.append(B, "fo", recs(b"1"))
    await store.append(B, "fo", recs(b"2", b"3", b"4"))
    await asyncio.wait_for(t, 2)
    assert [] in got, "heartbeats while idle"
    assert [b for batch in got for b in batch] == [b"1", b"2", b"3"]


async def test_follow_wait_ends(store):
    await store.create_stream(B, "fw")
    batches = [b async for b in store.read_session(B, "fw", seq_num=0, wait_s=0.05,
                                                   heartbeat_s=1)]
    assert all(not b.records for b in batches)


async def test_seal_and_move(env):
    env.extra_channels = ["ch1"]
    store = await env.open()
    await store.create_stream(B, "m")
    await store.append(B, "m", recs(b"a", b"b"))
    await store.seal_stream(B, "m")
    with pytest.raises(Sealed) as e:
        await store.append(B, "m", recs(b"c"))
    assert e.value.retriable
    await store.close()
    store = await env.open()
    await store.create_stream(B, "n")
    await store.append(B, "n", recs(b"a", b"b"))
    await store.move_stream(B, "n", "ch1")
    ack = await store.append(B, "n", recs(b"c"))
    assert ack.start.seq_num == 2
    assert [r.body for r in (await store.read(B, "n", seq_num=0)).records] == [b"a", b"b", b"c"]
    await store.close()
    store = await env.open()
    assert [r.body for r in (await store.read(B, "n", seq_num=0)).records] == [b"a", b"b", b"c"]
    await store.close()


async def test_create_on_append_and_read(store):
    await store.create_basin("auto-basin", {"create_stream_on_append": True,
                                            "create_stream_on_read": True})
    ack = await store.append("auto-basin", "new", recs(b"x"))
    assert ack.start.seq_num == 0
    assert (await store.read("auto-basin", "other", seq_num=0)).records == []


async def test_retention_by_age(store):
    await store.create_stream(B, "old", {"retention_policy": {"age": 1},
                                         "timestamping": {"uncapped": True}})
    now = store.clock.now_ms()
    await store.append(B, "old", [AppendRecord(b"ancient", timestamp=now - 10_000),
                                  AppendRecord(b"fresh", timestamp=now)])
    batch = await store.read(B, "old", seq_num=0)
    assert [r.body for r in batch.records] == [b"fresh"]
    assert await store.first_seq(B, "old") == 1


async def test_idle_streams_leave_memory(env):
    store = await env.open()
    ch = store.channels["ch0"]
    ch.config.keep_in_memory_fraction = 0.0
    for i in range(50):
        await store.create_stream(B, f"idle-{i}")
        await store.append(B, f"idle-{i}", recs(b"x"))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not ch.streams:
            break
    assert not ch.streams, "offloaded idle streams hold no state in memory"
    assert (await store.read(B, "idle-7", seq_num=0)).records[0].body == b"x"
    await store.close()


async def test_the_in_memory_tail_costs_the_garbage_collector_nothing(store):
    """Each record of the tail is a plain tuple of ints and bytes, which the collector
    stops tracking the first time it sees it: a tail of 100,000s of records made every
    full collection go through all of them (40-60 ms on the bench machine). Reads still
    get SequencedRecords, from any point of the tail, a count at a time."""
    import gc

    from s2core.records import SequencedRecord
    await store.create_stream(B, "gc")
    await store.append(B, "gc", [AppendRecord(b"h%d" % i, headers=[(b"k", b"v")])
                                 for i in range(1000)])
    ch = next(iter(store.channels.values()))
    st = next(s for s in ch.streams.values() if s.name == "gc")
    assert len(st.mem_recs) == 1000
    for _ in range(3):  # (a tuple goes untracked once its items are: a level at a time)
        gc.collect()
    assert not any(gc.is_tracked(r) for r in st.mem_recs)
    batch = await store.read(B, "gc", seq_num=990, count=5)
    assert all(type(r) is SequencedRecord for r in batch.records)
    assert [(r.seq_num, r.body, r.headers) for r in batch.records] == \
        [(990 + i, b"h%d" % (990 + i), ((b"k", b"v"),)) for i in range(5)]
    batch = await store.read(B, "gc", seq_num=0)
    assert [r.seq_num for r in batch.records] == list(range(1000))


async def test_a_channel_adopted_then_released(env):
    """A store can take over a channel another process served (adopt_channel: its lease,
    its log) and serve its streams, then let it go again (release_channel): NotServed."""
    from s2core.errors import NotServed

    env.extra_channels = ["ch-b"]
    other = await env.open()
    await other.create_stream(B, "moved", channel="ch-b")
    await other.append(B, "moved", recs(b"one", b"two"))
    b_spec = [s for s in env.specs() if s.name == "ch-b"][0]
    env.extra_channels = []
    mine = await env.open()  # serves ch0 only (and fences `other`'s ch0)
    with pytest.raises(NotServed):
        await mine.append(B, "moved", recs(b"x"))
    await mine.adopt_channel(b_spec)  # `other` is fenced on ch-b from now on
    ack = await mine.append(B, "moved", recs(b"three"))
    assert ack.start.seq_num == 2
    batch = await mine.read(B, "moved", seq_num=0, count=10)
    assert [r.body for r in batch.records] == [b"one", b"two", b"three"]
    await mine.release_channel("ch-b")
    with pytest.raises(NotServed):
        await mine.check_tail(B, "moved")
    await mine.close()
    await asyncio.wait_for(other.close(), 10)  # (fenced on both channels: it just stops)
