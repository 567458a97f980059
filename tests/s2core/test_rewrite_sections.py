"""Rewriting offloaded sections (`StreamStore.rewrite_offloaded`), the storage step of keyed
compaction: records keep their seq_nums, dropped ones leave gaps that reads step over,
small sections are merged, the WAL's part is never touched, and a concurrent purge wins."""
import json

import pytest

from s2core.records import AppendRecord, SequencedRecord, trim_record

B = "test-basin"


@pytest.fixture
def env(env):
    env.cfg["offload_target_bytes"] = 300  # several small sections per stream
    return env


async def offload_all(store) -> None:
    ch = store.channels["ch0"]
    while await ch.offloader.offload_once():
        pass


async def read_all(store, name: str) -> list[SequencedRecord]:
    out = []
    seq = 0
    while True:
        batch = await store.read(B, name, seq_num=seq, clamp=True, count=7)
        if not batch.records:
            return out
        out += batch.records
        seq = batch.records[-1].end_seq


async def rows(store, name: str) -> list[dict]:
    uid = (await store._handle(B, name)).uid
    return [json.loads(v.value) for _, v in await store.metadata.list_prefix(f"seg/{uid.hex()}/")]


async def fill(store, name: str, n: int, span: int = 1) -> None:
    await store.create_stream(B, name)
    for i in range(0, n, 5):
        await store.append(B, name, [AppendRecord(b"r%03d" % j + b"." * 40, span=span)
                                     for j in range(i, min(n, i + 5))])


def drop_odd(rec: SequencedRecord):
    n = int(rec.body[1:4])
    if n % 2:
        return None
    return rec._replace(body=rec.body[:4]) if n % 4 == 0 else rec


async def test_dropped_records_leave_gaps_and_reads_step_over_them(store):
    await fill(store, "s", 60, span=2)
    await offload_all(store)
    before = await rows(store, "s")
    assert len(before) >= 3
    stats = await store.rewrite_offloaded(B, "s", 10**9, drop_odd)
    assert stats.records_read == 60 and stats.records_dropped == 30
    assert stats.records_changed == 15 and not stats.conflict
    assert stats.bytes_after < stats.bytes_before
    after = await rows(store, "s")
    assert len(after) < len(before), "small sections are merged"
    got = await read_all(store, "s")
    assert [r.seq_num for r in got] == [4 * k for k in range(30)]  # span 2, every other
    assert [r.body for r in got] == [b"r%03d" % j if j % 4 == 0 else b"r%03d" % j + b"." * 40
                                     for j in range(0, 60, 2)]
    assert all(r.span == 2 for r in got)
    # from inside a gap, a read starts at the next record; the tail is unchanged
    assert (await store.read(B, "s", seq_num=2, count=1)).records[0].seq_num == 4
    assert (await store.check_tail(B, "s")).seq_num == 120
    # appends go on after the gaps
    ack = await store.append(B, "s", [AppendRecord(b"next")])
    assert ack.start.seq_num == 120
    assert (await read_all(store, "s"))[-1].body == b"next"


async def test_everything_below_the_memory_dropped_reads_the_rest(store):
    await fill(store, "s", 20)
    await offload_all(store)
    await store.rewrite_offloaded(B, "s", 10**9, lambda r: None)
    assert await rows(store, "s") == []
    await store.append(B, "s", [AppendRecord(b"after")])
    got = await read_all(store, "s")
    assert [(r.seq_num, r.body) for r in got] == [(20, b"after")]


async def test_unchanged_sections_are_not_rewritten(store):
    await fill(store, "s", 30)
    await offload_all(store)
    before = await rows(store, "s")
    stats = await store.rewrite_offloaded(B, "s", 10**9, lambda r: r)
    assert stats.sections_written == 0 and await rows(store, "s") == before


async def test_only_sections_ending_at_or_below_upto(store):
    await fill(store, "s", 40)
    await offload_all(store)
    sections = await store.offloaded_sections(B, "s")
    upto = sections[1][1]  # the end of the second section
    await store.rewrite_offloaded(B, "s", upto, lambda r: None)
    got = await read_all(store, "s")
    assert [r.seq_num for r in got] == list(range(upto, 40))


async def test_a_rewrite_keeps_seq_span_and_timestamp(store):
    await fill(store, "s", 10)
    await offload_all(store)
    with pytest.raises(ValueError):
        await store.rewrite_offloaded(B, "s", 10**9, lambda r: r._replace(timestamp=1))
    assert len(await read_all(store, "s")) == 10


async def test_commands_and_trims_survive_and_purge_after_rewrite(store):
    await fill(store, "s", 30)
    await store.append(B, "s", [trim_record(25)])
    await offload_all(store)
    await store.rewrite_offloaded(B, "s", 10**9,
                                  lambda r: r if r.is_command() else r._replace(body=b"x"),
                                  group_bytes=1)  # (one section each: a purge takes some)
    got = await read_all(store, "s")
    assert [r.seq_num for r in got] == list(range(25, 31))
    assert got[-1].is_command()
    removed = await store.trim_and_retain()
    assert removed >= 1
    assert [r.seq_num for r in await read_all(store, "s")] == list(range(25, 31))


async def test_old_objects_are_deleted_once_no_section_uses_them(env):
    env.cfg["offload_target_bytes"] = 100_000  # one shared object for both streams
    store = await env.open()
    try:
        await fill(store, "a", 10)
        await fill(store, "b", 10)
        await offload_all(store)
        shared = {r["k"] for r in await rows(store, "a")}
        assert shared == {r["k"] for r in await rows(store, "b")}
        await store.rewrite_offloaded(B, "a", 10**9, lambda r: r._replace(body=b"a"))
        (old,) = shared
        assert old in await store.segments.list(), "b still uses it"
        await store.rewrite_offloaded(B, "b", 10**9, lambda r: r._replace(body=b"b"))
        assert old not in await store.segments.list()
        assert await store.metadata.get(f"obj/{old}") is None
        assert [r.body for r in await read_all(store, "a")] == [b"a"] * 10
        assert [r.body for r in await read_all(store, "b")] == [b"b"] * 10
    finally:
        await store.close()


async def test_a_purge_that_got_there_first_makes_a_conflict(store):
    await fill(store, "s", 40)
    await offload_all(store)
    sections = await store.offloaded_sections(B, "s")
    calls = 0

    def rewrite(rec):
        nonlocal calls
        calls += 1
        return rec._replace(body=b"new")

    real_get = store.metadata.get
    purged = False

    async def get(key):
        nonlocal purged
        if key.startswith("seg/") and not purged:  # between reading and publishing
            purged = True
            await store.catalog.purge((await store._handle(B, "s")).uid, sections[0][1])
        return await real_get(key)

    store.metadata.get = get
    try:
        stats = await store.rewrite_offloaded(B, "s", 10**9, rewrite, group_bytes=1)
    finally:
        store.metadata.get = real_get
    assert stats.conflict and stats.sections_written == 0
    got = await read_all(store, "s")
    assert got[0].seq_num == sections[0][1] or got[0].seq_num == 0
    assert all(r.body.startswith(b"r") for r in got), "nothing was replaced"


async def test_a_reader_with_stale_rows_reads_the_new_sections(store):
    await fill(store, "s", 40)
    await offload_all(store)
    uid = (await store._handle(B, "s")).uid
    stale = await store.catalog.rows(uid)  # cached, then replaced under the reader
    it = store.catalog.iter_records(uid, 0, 40)
    first = await it.__anext__()
    assert first.seq_num == 0
    store.catalog._sections.clear()
    await store.rewrite_offloaded(B, "s", 10**9, lambda r: r._replace(body=b"z"))
    store.catalog._rows[uid] = stale  # as another process would still have them
    rest = [r async for r in it]
    assert [r.seq_num for r in rest] == list(range(1, 40))
    assert all(r.body == b"z" for r in rest[-5:])
