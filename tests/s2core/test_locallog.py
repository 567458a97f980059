"""The local-disk log replica: durability across reopen, torn tails, overwrites, deletes."""
import asyncio
import os

import pytest

from s2core.objstore.base import ObjectExists, ObjectNotFound
from s2core.wal.locallog import LocalLogReplica


async def test_put_get_list_reopen(tmp_path):
    r = LocalLogReplica(tmp_path)
    await asyncio.gather(*(r.put(f"wal/c/{i:04d}", b"x%d" % i, if_absent=True)
                           for i in range(50)))
    with pytest.raises(ObjectExists):
        await r.put("wal/c/0001", b"again", if_absent=True)
    await r.put("wal/c/0001", b"repaired")  # an overwrite (repair) wins
    await r.delete("wal/c/0002")
    assert (await r.get("wal/c/0003")) == b"x3"
    await r.close()
    r = LocalLogReplica(tmp_path)
    keys = await r.list("wal/c/")
    assert "wal/c/0000" in keys and len(keys) >= 49
    assert await r.get("wal/c/0001") == b"repaired"
    with pytest.raises(ObjectNotFound):
        await r.get("nope")
    await r.close()


async def test_torn_tail_is_cut(tmp_path):
    r = LocalLogReplica(tmp_path)
    await r.put("a", b"A" * 100)
    await r.put("b", b"B" * 100)
    await r.close()
    f = min(p for p in os.listdir(tmp_path) if p.endswith(".log"))  # the written one
    path = tmp_path / f
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 10)  # a crash in the middle of the last write
    r = LocalLogReplica(tmp_path)
    assert await r.list() == ["a"]
    assert await r.get("a") == b"A" * 100
    await r.put("c", b"C")
    await r.close()
    r = LocalLogReplica(tmp_path)
    assert await r.list() == ["a", "c"]
    await r.close()


async def test_rotation_and_file_reclaim(tmp_path):
    r = LocalLogReplica(tmp_path, file_bytes=1000)
    for i in range(30):
        await r.put(f"k{i:02d}", b"z" * 200)
    files = [p for p in os.listdir(tmp_path) if p.endswith(".log")]
    assert len(files) > 3
    for i in range(30):
        await r.delete(f"k{i:02d}")
    left = [p for p in os.listdir(tmp_path) if p.endswith(".log")]
    assert len(left) <= 2, "files whose entries are all deleted are removed"
    await r.close()


async def test_delete_many_reclaims_like_delete(tmp_path):
    r = LocalLogReplica(tmp_path, file_bytes=1000)
    for i in range(30):
        await r.put(f"k{i:02d}", b"z" * 200)
    await r.delete_many([f"k{i:02d}" for i in range(0, 30, 2)] + ["absent"])
    assert await r.list("k") == [f"k{i:02d}" for i in range(1, 30, 2)]
    assert await r.get("k01") == b"z" * 200
    await r.delete_many([f"k{i:02d}" for i in range(30)])
    assert await r.list() == []
    left = [p for p in os.listdir(tmp_path) if p.endswith(".log")]
    assert len(left) <= 2, "files whose entries are all deleted are recycled or removed"
    await r.close()


def _logs(path):
    out = {}
    for p in os.listdir(path):
        if p.endswith(".log"):
            try:
                out[p] = os.stat(path / p).st_ino
            except FileNotFoundError:
                pass  # renamed for removal by the background thread meanwhile
    return out


async def _fill_recycle_refill(r, tmp_path):
    """Write a*, delete them, write b*; returns {a key: (file no, inode)} of the a phase."""
    for i in range(40):
        await r.put(f"a{i:02d}", bytes([i]) * 700)
    where = {f"a{i:02d}": r._index[f"a{i:02d}"][0] for i in range(40)}
    inode = {int(p[:10]): ino for p, ino in _logs(tmp_path).items()}
    for i in range(40):
        await r.delete(f"a{i:02d}")
    for i in range(40):
        await r.put(f"b{i:02d}", b"b%02d" % i * 200)
    return {k: (n, inode.get(n)) for k, n in where.items()}


def _still_there(tmp_path, n, ino):
    p = tmp_path / f"{n:010d}.log"
    return p.exists() and os.stat(p).st_ino == ino


async def test_recycled_files_never_resurrect_a_former_life(tmp_path):
    r = LocalLogReplica(tmp_path, file_bytes=4096, spare_files=2)
    old = {ino for ino in _logs(tmp_path).values()}
    where = await _fill_recycle_refill(r, tmp_path)
    old |= {ino for _, ino in where.values()}
    assert set(_logs(tmp_path).values()) & old, "files of deleted entries are written again"
    live = [p for p in os.listdir(tmp_path) if not p.endswith(".dead")]
    assert len(live) <= 14, "dead files are recycled or retired"
    for _ in range(600):  # retired files are removed in the background, spaced out (by
        # one reaper for the process: files of earlier tests may be ahead in its queue)
        if not [p for p in os.listdir(tmp_path) if p.endswith(".dead")]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("retired files were not removed")
    await r.close()
    r = LocalLogReplica(tmp_path, file_bytes=4096, spare_files=2)
    keys = await r.list()
    for k in keys:  # deletes are in memory: a stale key may come back, but only from its file
        if k.startswith("a"):
            assert _still_there(tmp_path, *where[k]), f"{k} came back from a recycled file"
    assert [k for k in keys if k.startswith("b")] == [f"b{i:02d}" for i in range(40)]
    for i in range(40):
        assert await r.get(f"b{i:02d}") == b"b%02d" % i * 200
    await r.close()


async def test_a_torn_header_in_a_recycled_file_ends_its_scan(tmp_path):
    r = LocalLogReplica(tmp_path, file_bytes=4096, spare_files=2)
    where = await _fill_recycle_refill(r, tmp_path)
    last_file, last_off, _ = r._index["b39"]
    await r.close()
    path = tmp_path / f"{last_file:010d}.log"
    hdr_at = last_off - len(b"b39") - 14
    with open(path, "r+b") as fh:  # garble the newest entry's header: a torn write
        fh.seek(hdr_at + 4)
        fh.write(b"\xff\xff")
    r = LocalLogReplica(tmp_path, file_bytes=4096, spare_files=2)
    keys = await r.list()
    assert "b39" not in keys and "b38" in keys
    for k in keys:
        if k.startswith("a"):
            assert _still_there(tmp_path, *where[k]), f"{k} came back from a recycled file"
    await r.close()


async def test_every_sync_path_keeps_data(tmp_path, monkeypatch):
    from s2core.wal import locallog
    for one_flush in (True, False):
        d = tmp_path / f"one{one_flush}"
        reps = [LocalLogReplica(d / f"r{i}", file_bytes=8192) for i in range(3)]
        await asyncio.gather(*(x.put("first", b"x") for x in reps))
        dev = reps[0]._device
        assert all(x._device is dev for x in reps), "replicas on one device share a writer"
        monkeypatch.setattr(dev, "one_flush", one_flush and locallog.sync_file_range_fn
                            is not None)
        for i in range(60):
            await asyncio.gather(*(x.put(f"k{i}", b"%d" % i * 100) for x in reps))
        for x in reps:
            await x.close()
        for i in range(3):
            x = LocalLogReplica(d / f"r{i}", file_bytes=8192)
            assert len(await x.list()) == 61
            assert await x.get("k59") == b"59" * 100
            await x.close()


def test_fs_type_of_tmp_is_known():
    from s2core.diskio import fs_type
    assert fs_type(os.path.abspath(os.sep)) != ""


async def test_chunk_log_retries_a_failed_write_through_put_then(tmp_path, monkeypatch):
    """The chunk log hands chunks to log replicas with put_then (a callback, no task); a
    write that fails on the device is retried and the chunk still reaches its quorum."""
    import random

    from s2core.clock import SystemClock
    from s2core.metadata.memory import MemoryMetadataStore
    from s2core.wal.chunk import ChunkBuilder, chunk_key
    from s2core.wal.log import ChunkLog

    reps = [LocalLogReplica(tmp_path / f"r{i}") for i in range(3)]
    log_ = ChunkLog("ch", reps, 2, MemoryMetadataStore(), SystemClock(), random.Random(1))
    await log_.open()
    real_write = LocalLogReplica._write
    failures = []

    def flaky(self, puts):
        if self is reps[1] and not failures:
            failures.append(self)
            raise OSError(5, "injected write error")
        return real_write(self, puts)

    monkeypatch.setattr(LocalLogReplica, "_write", flaky)
    seqs = []
    for i in range(3):
        b = ChunkBuilder()
        b.add(bytes(16), i, 1, 1000 + i, (), b"body%d" % i)
        seq = log_.new_chunk_seq()
        seqs.append(seq)
        assert await log_.write(b, seq) == (log_.epoch, seq)
    assert failures == [reps[1]]
    for _ in range(200):  # the retry lands on the failed replica too (after a back-off),
        # and the third replica's copies (lazy: beyond the quorum) within a few ms
        present = [await r.list() for r in reps]
        if all(chunk_key("ch", log_.epoch, s) in p for s in seqs for p in present):
            break
        await asyncio.sleep(0.01)
    for r in reps:
        assert [k for k in await r.list("wal/ch/")] == [
            chunk_key("ch", log_.epoch, s) for s in seqs]
    await log_.close()
    for r in reps:
        await r.close()


def test_short_writes_keep_the_gil_and_land_where_asked(tmp_path):
    from s2core import diskio
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        parts = [b"head", memoryview(b"-body-"), bytearray(b"tail")]
        assert diskio.pwrite_short(fd, parts, 3) == 14
        assert diskio.pwrite_short(fd, [b"x" * 100_000], 17) == 100_000
        with pytest.raises(OSError):
            diskio.pwrite_short(-1, [b"a"], 0)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[:17] == b"\0\0\0head-body-tail" and data[17:] == b"x" * 100_000


def test_a_slow_short_write_turns_gil_keeping_off(tmp_path, monkeypatch):
    from s2core import diskio
    if diskio._pwrite_keep_gil is None:
        pytest.skip("no libc pwrite")
    ticks = iter([100.0, 100.0, 100.5])  # (check, start, end): the call "took" 500 ms
    monkeypatch.setattr(diskio.time, "monotonic", lambda: next(ticks, 100.5))
    monkeypatch.setattr(diskio, "_gil_kept_again_at", 0.0)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        diskio.pwrite_short(fd, [b"abc"], 0)
        assert diskio._gil_kept_again_at == 100.5 + diskio.BACKOFF_S
        assert not diskio._keeping_gil()  # until then, the GIL-releasing calls are used
        monkeypatch.setattr(diskio, "_pwrite_keep_gil", None)  # would fail if called
        assert diskio.pwrite_short(fd, [b"de"], 3) == 2
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abcde"


async def test_rotations_wake_one_preparer_thread_which_retires_the_old_files(
        tmp_path, monkeypatch):
    import threading
    r = LocalLogReplica(tmp_path, file_bytes=4096, spare_files=2)
    preparer = r._preparer
    assert preparer is not None and preparer.is_alive()
    started = []
    real_start = threading.Thread.start

    def start(self):
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    await r.put("a0", b"a" * 5000)  # fills its file: the next put moves to another
    first = r._index["a0"][0]
    await r.delete("a0")  # its file is left with no live entry (it is the current one)
    for i in range(40):  # ~7 rotations
        await r.put(f"b{i:02d}", b"b" * 700)
    assert r._fileno > first + 3
    assert not [n for n in started if n.startswith("wal-prep")], \
        "a rotation started a thread (on the loop) instead of waking the preparer"
    assert r._preparer is preparer
    for _ in range(200):  # retired by the preparer thread: kept as a spare or removed
        if not (tmp_path / f"{first:010d}.log").exists():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the file a rotation left empty was not retired")
    await r.close()
    assert not preparer.is_alive()


async def test_an_exclusive_log_directory_refuses_a_second_opener(tmp_path):
    """A server holds its WAL directories (flock): another process (or opener) cannot
    write them meanwhile; closing lets go."""
    from s2core.errors import Unavailable

    first = LocalLogReplica(tmp_path / "wal", exclusive=True)
    with pytest.raises(Unavailable, match="in use by another process"):
        LocalLogReplica(tmp_path / "wal", exclusive=True)
    await first.close()
    second = LocalLogReplica(tmp_path / "wal", exclusive=True)
    await second.close()
