"""LocalDirObjectStore specifics, measure_fdatasync, and the object store URL factory."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from s2core import diskio
from s2core.errors import Indeterminate, InvalidArgument, Unavailable
from s2core.objstore import ObjectExists, ObjectNotFound, open_object_store
from s2core.objstore.localdir import TMP_PREFIX, LocalDirObjectStore, measure_fdatasync
from s2core.objstore.memory import MemoryObjectStore
from s2core.objstore.s3 import S3ObjectStore


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_keys_map_to_files(tmp_path: Path) -> None:
    store = LocalDirObjectStore(tmp_path)
    await store.put("chunks/000001", b"one")
    await store.put("segments/s/0", b"two", if_absent=True)
    assert files_under(tmp_path) == ["chunks/000001", "segments/s/0"]
    assert (tmp_path / "chunks" / "000001").read_bytes() == b"one"
    assert store.name == f"file://{tmp_path}"
    await store.close()


async def test_temp_files_are_invisible_and_reserved(tmp_path: Path) -> None:
    store = LocalDirObjectStore(tmp_path)
    await store.put("d/k", b"v")
    (tmp_path / "d" / f"{TMP_PREFIX}leftover").write_bytes(b"crashed mid-put")
    assert await store.list() == ["d/k"]
    with pytest.raises(InvalidArgument):
        await store.put(f"d/{TMP_PREFIX}x", b"v")
    with pytest.raises(InvalidArgument):
        await store.get(f"{TMP_PREFIX}x/y")
    with pytest.raises(InvalidArgument):
        await store.put("d/" + "x" * 256, b"v")  # longer than a file name may be
    await store.put("d/" + "x" * 255, b"v")
    await store.close()


async def test_object_and_prefix_cannot_share_a_name(tmp_path: Path) -> None:
    store = LocalDirObjectStore(tmp_path)
    await store.put("a", b"object")
    with pytest.raises(InvalidArgument):
        await store.put("a/b", b"under an object")
    await store.put("x/y", b"v")
    with pytest.raises(InvalidArgument):
        await store.put("x", b"over a prefix")
    with pytest.raises(InvalidArgument):
        await store.put("x", b"over a prefix", if_absent=True)
    assert await store.get("a") == b"object"
    assert files_under(tmp_path) == ["a", "x/y"]  # no temp files left behind
    await store.close()


async def test_delete_prunes_empty_directories(tmp_path: Path) -> None:
    store = LocalDirObjectStore(tmp_path)
    await store.put("p/q/r/1", b"")
    await store.put("p/2", b"")
    await store.delete("p/q/r/1")
    assert not (tmp_path / "p" / "q").exists()
    assert (tmp_path / "p" / "2").exists()
    await store.delete("p/2")
    assert list(tmp_path.iterdir()) == []
    await store.close()


async def test_put_and_delete_race_in_one_directory(tmp_path: Path) -> None:
    store = LocalDirObjectStore(tmp_path, fsync=False)

    async def churn(i: int) -> None:
        for j in range(50):
            await store.put(f"hot/dir/{i}-{j}", b"v")
            await store.delete(f"hot/dir/{i}-{j}")

    await asyncio.gather(*(churn(i) for i in range(8)))
    assert await store.list() == []
    await store.close()


async def test_failed_data_sync_publishes_nothing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalDirObjectStore(tmp_path)

    def broken_fdatasync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken_fdatasync)
    with pytest.raises(Unavailable):
        await store.put("d/k", b"v")
    monkeypatch.undo()
    with pytest.raises(ObjectNotFound):
        await store.get("d/k")
    assert files_under(tmp_path) == []
    await store.close()


async def test_failed_directory_sync_is_indeterminate(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalDirObjectStore(tmp_path)
    await store.put("d/first", b"v")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(Indeterminate):
        await store.put("d/k", b"v", if_absent=True)
    monkeypatch.undo()
    assert await store.get("d/k") == b"v"  # visible, but its durability was unknown
    with pytest.raises(ObjectExists):
        await store.put("d/k", b"w", if_absent=True)
    await store.close()


async def test_no_fsync_mode_and_double_close(tmp_path: Path) -> None:
    store = LocalDirObjectStore(tmp_path / "new" / "root", fsync=False)
    await store.put("k", b"v")
    assert await store.get("k") == b"v"
    await store.close()
    await store.close()


def test_measure_fdatasync(tmp_path: Path) -> None:
    samples = measure_fdatasync(tmp_path, size=4096, n=20)
    assert len(samples) == 20 and all(s > 0 for s in samples)
    assert list(tmp_path.iterdir()) == []


async def test_factory(tmp_path: Path) -> None:
    mem = open_object_store("memory://replica-1")
    assert isinstance(mem, MemoryObjectStore) and mem.name == "replica-1"
    local = open_object_store(f"file://{tmp_path}/objs?fsync=false")
    assert isinstance(local, LocalDirObjectStore)
    assert local.root == f"{tmp_path}/objs" and local._fsync is False
    await local.put("k", b"v")
    assert (tmp_path / "objs" / "k").read_bytes() == b"v"
    await local.close()
    s3 = open_object_store(
        "s3://bucket/some/prefix?endpoint_url=http://127.0.0.1:9000&region=eu-west-1"
        "&max_attempts=2&read_timeout=2.5")
    assert isinstance(s3, S3ObjectStore)
    assert (s3.bucket, s3.prefix, s3.name) == ("bucket", "some/prefix/",
                                               "s3://bucket/some/prefix/")
    await s3.close()  # never opened a client: nothing to do
    for bad in ("file://relative/path", "s3:///no-bucket", "gs://bucket", "/just/a/path"):
        with pytest.raises(InvalidArgument):
            open_object_store(bad)


class _FakeTime:
    """time for s2core.diskio: sleeps advance the clock instead of waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_write_pacer_spaces_every_writer_sharing_it(monkeypatch) -> None:
    fake = _FakeTime()
    monkeypatch.setattr(diskio, "time", fake)
    pacer = diskio.WritePacer()
    pacer.wait(1000, 1000.0)  # idle: the first piece goes at once
    assert fake.slept == []
    pacer.wait(500, 1000.0)  # (another writer) waits for the first piece's second
    pacer.wait(500, 1000.0)
    assert fake.slept == [pytest.approx(1.0), pytest.approx(0.5)]
    fake.now += 10  # idle for a while: no credit saved up, no wait either
    fake.slept.clear()
    pacer.wait(100, 1000.0)
    assert fake.slept == []


async def test_a_paced_put_writes_at_the_rate_asked_and_keeps_every_byte(
        tmp_path: Path, monkeypatch) -> None:
    fake = _FakeTime()
    monkeypatch.setattr(diskio, "time", fake)
    store = LocalDirObjectStore(tmp_path)
    parts = [os.urandom(1000) for _ in range(1024)]  # ~1 MiB in pieces of ~128 KiB
    await store.put("segments/paced", parts, pace=1_000_000.0)
    # pieces of 132 parts: the last one (100 parts) starts 924,000 bytes / 1e6 B/s in
    assert sum(fake.slept) == pytest.approx(0.924)
    assert len(fake.slept) == 7
    assert await store.get("segments/paced") == b"".join(parts)
    fake.slept.clear()
    await store.put("segments/unpaced", parts)  # no pace: as fast as the disk takes it
    assert fake.slept == []
    await store.close()


async def test_a_put_asks_a_pace_function_before_each_piece(tmp_path: Path,
                                                             monkeypatch) -> None:
    fake = _FakeTime()
    monkeypatch.setattr(diskio, "time", fake)
    store = LocalDirObjectStore(tmp_path)
    parts = [os.urandom(1000) for _ in range(1024)]  # 8 pieces of ~128 KiB
    asked = []

    def pace():  # full speed for the first 4 pieces, then 1 MB/s
        asked.append(True)
        return None if len(asked) <= 4 else 1_000_000.0

    await store.put("segments/mixed", parts, pace=pace)
    assert len(asked) == 8
    assert len(fake.slept) == 3  # (the 5th piece starts a paced run: no wait yet)
    assert await store.get("segments/mixed") == b"".join(parts)
    with pytest.raises(InvalidArgument):
        await store.put("segments/bad", parts, pace=lambda: 0.0)
    await store.close()


async def test_a_paced_put_needs_a_positive_rate_and_ends_at_full_speed_on_close(
        tmp_path: Path, monkeypatch) -> None:
    fake = _FakeTime()
    monkeypatch.setattr(diskio, "time", fake)
    store = LocalDirObjectStore(tmp_path)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(InvalidArgument):
            await store.put("segments/x", b"x", pace=bad)
    parts = [os.urandom(1000) for _ in range(1024)]
    store._closed = True  # (as close() sets it first, then waits for the puts under way)
    await asyncio.to_thread(store._put_sync, "segments/y", store._path("segments/y"),
                            parts, False, 1000.0)
    assert fake.slept == []
    assert (tmp_path / "segments" / "y").read_bytes() == b"".join(parts)
