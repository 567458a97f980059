"""The orphan sweep (s2core/sweep.py): unreferenced segment objects are deleted once
their writer can no longer publish them and two passes found them unused, never an object
in use or in flight; a failed offload pass and a restart leave orphans it takes."""
from __future__ import annotations

import json

import pytest

from s2core.records import AppendRecord
from s2core.sweep import (
    OrphanSweeper,
    compacted_key,
    offload_key,
    shared_key,
    writer_of,
)

B = "test-basin"


def test_keys_name_their_writer() -> None:
    assert writer_of(offload_key("ab" * 16, 7, 3, 12, "ch-x")) == ("ch-x", 3)
    assert writer_of(shared_key("ch0", 9, 100, 2)) == ("ch0", 9)
    assert writer_of(compacted_key("ab" * 16, 0, 10, 0xFFF, 4, "ch0")) == ("ch0", 4)
    # keys written before they named a writer, and foreign keys: none
    assert writer_of(f"segments/{'ab' * 16}/{7:020d}-{3:010d}-{12:06d}") is None
    assert writer_of(f"segments/compacted/{'ab' * 16}/{0:020d}-{10:020d}-{5:012x}") is None
    assert writer_of("segments/shared/x") is None
    assert writer_of("chunks/000001") is None
    assert writer_of("segments/zz/not-a-number-here-ch0") is None


async def _offloaded(env):
    store = await env.open()
    await store.create_stream(B, "s")
    await store.append(B, "s", [AppendRecord(b"x" * 300) for _ in range(20)])
    assert await store.channels["ch0"].offloader.offload_once()
    return store


async def _read_all(store) -> list[bytes]:
    ch = store.channels["ch0"]
    ch.config.keep_in_memory_fraction = 0.0
    await ch.offloader.evict()
    return [r.body for r in (await store.read(B, "s", seq_num=0, count=1000)).records]


async def test_two_passes_then_only_what_no_writer_can_publish(env) -> None:
    store = await _offloaded(env)
    seg = env.segments
    used = set(await seg.list("segments/"))
    assert used
    epoch = store.channels["ch0"].log.epoch
    uid = "cd" * 16
    await env.metadata.create("channel/chx", json.dumps({"epoch": 5, "ends": {},
                                                         "floor": [0, 0]}).encode())
    old = offload_key(uid, 0, epoch - 1, 1, "ch0")       # a killed earlier process's
    mine = shared_key("ch0", epoch, 999, 77)             # this process gave it up
    flying = offload_key(uid, 5, epoch, 78, "ch0")       # this process is writing it
    foreign_live = offload_key(uid, 0, 5, 1, "chx")      # another process, not fenced
    foreign_dead = offload_key(uid, 0, 4, 1, "chx")      # another process, fenced since
    unknown = f"segments/{uid}/{0:020d}-{1:010d}-{1:06d}"  # names no writer
    later = offload_key(uid, 9, epoch - 1, 2, "ch0")     # gets a row between the passes
    for k in (old, mine, flying, foreign_live, foreign_dead, unknown, later):
        await seg.put(k, b"orphan?")
    sweeper = OrphanSweeper(store)
    with store.in_flight.writing([flying]):
        assert await sweeper.sweep() == 0  # first sight: nothing goes yet
        await env.metadata.create(f"obj/{later}", json.dumps({"live": 1}).encode())
        assert await sweeper.sweep() == 3
    left = set(await seg.list("segments/"))
    assert left == used | {flying, foreign_live, unknown, later}
    assert await sweeper.sweep() == 0  # `flying` was seen once since it landed
    assert await sweeper.sweep() == 1  # ... and is gone the pass after, never published
    assert await _read_all(store) == [b"x" * 300] * 20
    await store.close()


async def test_a_failed_publish_leaves_orphans_the_sweep_takes(env, monkeypatch) -> None:
    store = await env.open()
    await store.create_stream(B, "s")
    await store.append(B, "s", [AppendRecord(b"y" * 300) for _ in range(20)])
    ch = store.channels["ch0"]
    real = ch.log.advance_floor
    calls = []

    async def fail_once(floor, ops):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("metadata unreachable")
        return await real(floor, ops)

    monkeypatch.setattr(ch.log, "advance_floor", fail_once)
    with pytest.raises(OSError):
        await ch.offloader.offload_once()
    abandoned = set(await env.segments.list("segments/"))
    assert abandoned and not store.in_flight.keys
    assert await ch.offloader.offload_once()  # redone whole, with new objects
    used = set(await env.segments.list("segments/")) - abandoned
    assert used
    sweeper = OrphanSweeper(store)
    assert await sweeper.sweep() == 0
    assert await sweeper.sweep() == len(abandoned)
    assert set(await env.segments.list("segments/")) == used
    assert await _read_all(store) == [b"y" * 300] * 20
    await store.close()


async def test_after_a_restart_the_old_epoch_orphans_go(env) -> None:
    store = await _offloaded(env)
    epoch = store.channels["ch0"].log.epoch
    orphan = shared_key("ch0", epoch, 12345, 500)
    await env.segments.put(orphan, b"left by a pass that was killed")
    await store.close()
    store = await env.open()  # the next process: epoch + 1
    assert store.channels["ch0"].log.epoch == epoch + 1
    sweeper = OrphanSweeper(store)
    await sweeper.sweep()
    assert await sweeper.sweep() == 1
    assert orphan not in await env.segments.list("segments/")
    assert await _read_all(store) == [b"x" * 300] * 20
    await store.close()


async def test_compaction_objects_name_the_writer_and_stay_in_use(env) -> None:
    store = await _offloaded(env)

    def drop_odd(rec):
        return None if rec.seq_num % 2 else rec

    stats = await store.rewrite_offloaded(B, "s", 20, drop_odd)
    assert stats.records_dropped == 10
    keys = await env.segments.list("segments/compacted/")
    assert keys and all(writer_of(k) == ("ch0", store.channels["ch0"].log.epoch)
                        for k in keys)
    sweeper = OrphanSweeper(store)
    assert await sweeper.sweep() == 0 and await sweeper.sweep() == 0
    assert set(keys) <= set(await env.segments.list("segments/"))
    assert await _read_all(store) == [b"x" * 300] * 10
    await store.close()
