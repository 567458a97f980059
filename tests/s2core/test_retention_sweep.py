"""The trim and retention pass (`StreamStore.trim_and_retain`) works from metadata alone:
idle streams stay idle, expired and trimmed sections go, acknowledged records stay."""
import asyncio
import json

import pytest

from s2core.metadata.base import Op
from s2core.records import AppendRecord, trim_record

B = "test-basin"
HOUR_MS = 3600 * 1000
ONE_HOUR = {"retention_policy": {"age": 3600}}


@pytest.fixture
def env(env):
    env.cfg["keep_in_memory_fraction"] = 0.0  # offloaded streams become idle at once
    return env


def recs(*bodies, timestamp=None):
    return [AppendRecord(b, timestamp=timestamp) for b in bodies]


async def settle(store) -> None:
    """Offload everything durable and evict idle streams' states."""
    ch = store.channels["ch0"]
    while await ch.offloader.offload_once():
        pass
    await ch.offloader.evict()


async def seg_rows(store, name: str) -> list:
    uid = (await store._handle(B, name)).uid
    return await store.metadata.list_prefix(f"seg/{uid.hex()}/")


def spy_state_loads(ch) -> list:
    loaded = []
    real = ch.state

    async def state(uid):
        loaded.append(uid)
        return await real(uid)

    ch.state = state
    return loaded


async def bodies(store, name: str) -> list[bytes]:
    return [r.body for r in (await store.read(B, name, seq_num=0, clamp=True)).records
            if not r.is_command()]


async def test_pass_over_idle_streams_loads_no_state(env):
    store = await env.open()
    ch = store.channels["ch0"]
    old = store.clock.now_ms() - 2 * HOUR_MS
    kinds = {f"s-{i:03d}": ("expire", "trim", "keep", "forever")[i % 4] for i in range(120)}
    for name, kind in kinds.items():
        await store.create_stream(B, name, {"retention_policy": {"infinite": {}}}
                                  if kind == "forever" else ONE_HOUR)
    for name, kind in kinds.items():  # first sections
        first = {"trim": recs(b"a", b"b"), "keep": recs(b"new")}.get(
            kind, recs(b"old", timestamp=old))
        await store.append(B, name, first)
    await settle(store)
    for name in kinds:  # second sections
        await store.append(B, name, recs(b"fresh"))
    await settle(store)
    for name, kind in kinds.items():  # third sections: trim to 2, below `fresh`
        if kind == "trim":
            await store.append(B, name, [trim_record(2)])
    await settle(store)
    assert not ch.streams
    loaded = spy_state_loads(ch)
    removed = await store.trim_and_retain(page_size=7)
    assert removed == 60  # the first section of each "expire" and "trim" stream
    assert not ch.streams and loaded == [], "the pass loaded idle streams' states"
    del ch.state
    for name, kind in kinds.items():
        assert len(await seg_rows(store, name)) == {"expire": 1, "trim": 2}.get(kind, 2)
        assert await bodies(store, name) == {
            "expire": [b"fresh"], "trim": [b"fresh"], "keep": [b"new", b"fresh"],
            "forever": [b"old", b"fresh"]}[kind]
    assert await store.trim_and_retain(page_size=7) == 0
    await store.close()


async def test_retention_expires_sections_of_an_idle_stream(env):
    store = await env.open()
    ch = store.channels["ch0"]
    now = store.clock.now_ms()
    await store.create_stream(B, "aging", ONE_HOUR)
    await store.create_stream(B, "gone", ONE_HOUR)
    for i in range(3):
        await store.append(B, "aging", recs(b"old-%d" % i, timestamp=now - (4 - i) * HOUR_MS))
        await store.append(B, "gone", recs(b"old-%d" % i, timestamp=now - (4 - i) * HOUR_MS))
        await settle(store)
    await store.append(B, "aging", recs(b"new-0", b"new-1"))
    await settle(store)
    assert not ch.streams
    assert len(await seg_rows(store, "aging")) == 4
    objects_before = len(await store.segments.list(""))
    assert await store.trim_and_retain() == 3 + 3
    assert not ch.streams
    assert [int(k.rsplit("/", 1)[1]) for k, _ in await seg_rows(store, "aging")] == [3]
    assert await seg_rows(store, "gone") == []
    # three objects held only these old sections (one per offload); the fourth holds new-*
    assert len(await store.segments.list("")) == objects_before - 3
    # reads from 0 clamp to the first kept record; the tail does not move
    batch = await store.read(B, "aging", seq_num=0)
    assert [(r.seq_num, r.body) for r in batch.records] == [(3, b"new-0"), (4, b"new-1")]
    assert await store.first_seq(B, "aging") == 3
    assert (await store.check_tail(B, "aging")).seq_num == 5
    assert (await store.read(B, "gone", seq_num=0)).records == []
    assert await store.first_seq(B, "gone") == 3
    assert (await store.check_tail(B, "gone")).seq_num == 3
    await store.close()


async def test_resident_stream_uses_its_newer_trim(env):
    env.cfg["keep_in_memory_fraction"] = 0.5
    store = await env.open()
    ch = store.channels["ch0"]
    await store.create_stream(B, "live")
    await store.append(B, "live", recs(b"a", b"b"))
    await settle(store)
    await store.append(B, "live", recs(b"c"))
    await settle(store)
    await ch.offloader.stop()  # the trim below stays in memory, not in the checkpoint
    await asyncio.sleep(0.05)
    await store.append(B, "live", [trim_record(2)])
    uid = (await store._handle(B, "live")).uid
    assert json.loads((await store.metadata.get(f"ckpt/{uid.hex()}")).value)["trim"] == 0
    assert ch.streams[uid].trim_seq == 2
    assert await store.trim_and_retain() == 1
    assert [int(k.rsplit("/", 1)[1]) for k, _ in await seg_rows(store, "live")] == [2]
    assert await bodies(store, "live") == [b"c"]
    await store.close()


async def test_pass_purges_what_a_deleted_stream_left(env):
    store = await env.open()
    for name in ("dead", "alive"):  # their sections share objects
        await store.create_stream(B, name, {"retention_policy": {"infinite": {}}})
        await store.append(B, name, recs(b"x-" + name.encode()))
    await settle(store)
    # a deletion whose purge never ran (the process died right after the metadata batch)
    uid = (await store._handle(B, "dead")).uid
    await store.metadata.write_batch([Op("delete", f"stream/{B}/dead"),
                                      Op("delete", f"ckpt/{uid.hex()}")])
    store._handles.clear()
    assert len(await store.metadata.list_prefix(f"seg/{uid.hex()}/")) == 1
    assert await store.trim_and_retain() == 1
    assert await store.metadata.list_prefix(f"seg/{uid.hex()}/") == []
    store.catalog._sections.clear()  # read the shared object again: it must still exist
    assert await bodies(store, "alive") == [b"x-alive"]
    await store.close()


async def test_pass_with_concurrent_appends_keeps_every_acked_record(env):
    env.cfg.update(offload_target_bytes=512, offload_interval_s=0.005)
    store = await env.open()
    now = store.clock.now_ms()
    names = [f"c-{i:02d}" for i in range(24)]
    for name in names:
        await store.create_stream(B, name, ONE_HOUR)
        await store.append(B, name, recs(b"expired", timestamp=now - 2 * HOUR_MS))
    await settle(store)
    acked: dict[str, list[tuple[int, bytes]]] = {n: [] for n in names}
    trimmed_to: dict[str, int] = {}

    async def appender(name: str, k: int) -> None:
        for j in range(40):
            body = b"%s-%d" % (name.encode(), j)
            ack = await store.append(B, name, recs(body))
            acked[name].append((ack.start.seq_num, body))
            if k % 3 == 0 and j == 20:  # some streams also trim while the pass runs
                trimmed_to[name] = acked[name][10][0]
                await store.append(B, name, [trim_record(trimmed_to[name])])
            await asyncio.sleep(0)

    passes = 0
    removed = 0

    async def sweeper(done: asyncio.Event) -> None:
        nonlocal passes, removed
        while not done.is_set():
            removed += await store.trim_and_retain(page_size=3)
            passes += 1
            await asyncio.sleep(0)

    done = asyncio.Event()
    sweep = asyncio.create_task(sweeper(done))
    await asyncio.gather(*(appender(n, k) for k, n in enumerate(names)))
    done.set()
    await sweep
    await settle(store)
    removed += await store.trim_and_retain(page_size=3)
    assert passes >= 2 and removed >= len(names)
    store.catalog._sections.clear()  # reads go to the segment objects, which must exist
    for name in names:
        want = [(s, b) for s, b in acked[name] if s >= trimmed_to.get(name, 0)]
        got = (await store.read(B, name, seq_num=0, count=1000)).records
        assert [(r.seq_num, r.body) for r in got if not r.is_command()] == want, name
        rows = await seg_rows(store, name)
        assert all(json.loads(v.value)["t1"] >= now - HOUR_MS for _, v in rows)
    await store.close()


async def test_two_purges_of_one_section_lower_its_object_count_once():
    """Two purges of the same section (two sweeps, or two processes) must not both lower
    the shared object's live count: the second finds the row gone and does nothing."""
    from s2core.catalog import SegmentCatalog
    from s2core.metadata.memory import MemoryMetadataStore
    from s2core.objstore.memory import MemoryObjectStore
    import json as _json
    md, objs = MemoryMetadataStore(), MemoryObjectStore()
    await objs.put("segments/shared/x", b"data")
    await md.create("obj/segments/shared/x", _json.dumps({"live": 2}).encode())
    uid_a, uid_b = b"a" * 16, b"b" * 16
    for uid in (uid_a, uid_b):
        row = {"k": "segments/shared/x", "o": 0, "n": 4, "e": 10, "t0": 0, "t1": 0}
        await md.create(f"seg/{uid.hex()}/{0:020d}", _json.dumps(row).encode())
    one, two = SegmentCatalog(md, objs), SegmentCatalog(md, objs)
    await one.rows(uid_a)
    await two.rows(uid_a)  # both saw the row before either purged it
    assert await one.purge(uid_a, None) == 1
    assert await two.purge(uid_a, None) == 0  # already gone: nothing to do
    live = _json.loads((await md.get("obj/segments/shared/x")).value)["live"]
    assert live == 1, "stream b still uses the shared object"
    assert await objs.get("segments/shared/x") == b"data"
