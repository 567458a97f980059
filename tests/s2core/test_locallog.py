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
    [f] = [p for p in os.listdir(tmp_path) if p.endswith(".log")]
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
