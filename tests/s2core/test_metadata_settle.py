"""Writes whose answer was lost (Indeterminate) are settled by reading back, on a real
SQLite store and in the stream store (a move and an offload publish)."""
from __future__ import annotations

import asyncio
import os

import pytest

from s2core.errors import Indeterminate, Unavailable
from s2core.metadata import Op, Versioned, VersionMismatch
from s2core.metadata.settle import SettlingMetadataStore
from s2core.metadata.sqlite import SqliteMetadataStore
from s2core.records import AppendRecord

B = "test-basin"


class LosingStore:
    """Wraps a store: the next `lose` writes apply and then raise Indeterminate; `refuse`
    writes raise Indeterminate without applying (a commit that failed before it landed)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.lose = 0
        self.refuse = 0
        self.fail_reads = False

    async def _write(self, name, *args):
        if self.refuse:
            self.refuse -= 1
            raise Indeterminate("commit failed (not applied)")
        out = await getattr(self.inner, name)(*args)
        if self.lose:
            self.lose -= 1
            raise Indeterminate("applied, answer lost")
        return out

    async def create(self, key, value):
        return await self._write("create", key, value)

    async def put(self, key, value, expected_version):
        return await self._write("put", key, value, expected_version)

    async def delete(self, key, expected_version=None):
        return await self._write("delete", key, expected_version)

    async def write_batch(self, ops):
        return await self._write("write_batch", ops)

    async def get(self, key):
        if self.fail_reads:
            raise Unavailable("metadata unreachable")
        return await self.inner.get(key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
async def stores(tmp_path):
    inner = SqliteMetadataStore(os.path.join(tmp_path, "m.db"))
    losing = LosingStore(inner)
    yield losing, SettlingMetadataStore(losing)
    await inner.close()


async def test_applied_writes_whose_answer_was_lost_return_their_versions(stores):
    losing, md = stores
    losing.lose = 1
    assert await md.create("k", b"v1") == 1
    losing.lose = 1
    assert await md.put("k", b"v2", 1) == 2
    losing.lose = 1
    assert await md.write_batch([Op("put", "k", b"v3", 2), Op("put", "n", b"x"),
                                 Op("delete", "gone")]) == [3, 1, 0]
    losing.lose = 1
    assert await md.delete("n", 1) is True
    assert await md.get("k") == Versioned(b"v3", 3)
    assert await md.get("n") is None
    assert md.settled == 4
    # and the versions returned are the ones the next conditional writes need
    assert await md.put("k", b"v4", 3) == 4


async def test_writes_that_did_not_apply_stay_indeterminate(stores):
    losing, md = stores
    await md.create("k", b"v1")
    losing.refuse = 1
    with pytest.raises(Indeterminate):
        await md.put("k", b"v2", 1)
    assert await md.put("k", b"v2", 1) == 2  # a retry with the same version lands
    losing.refuse = 1
    with pytest.raises(Indeterminate):
        await md.write_batch([Op("put", "k", b"v3", 2), Op("put", "new", b"x")])
    assert await md.get("new") is None
    assert md.settled == 0


async def test_applied_then_changed_or_unreadable_stays_indeterminate(stores, monkeypatch):
    import s2core.metadata.settle as settle

    monkeypatch.setattr(settle, "READ_BACK_ATTEMPTS", 3)
    losing, md = stores
    await md.create("k", b"v1")
    losing.lose = 1
    real_get = losing.get

    async def get_after_another_write(key):
        await losing.inner.put(key, b"someone else", 0)
        return await real_get(key)

    losing.get = get_after_another_write
    with pytest.raises(Indeterminate):
        await md.put("k", b"v2", 1)
    losing.get = real_get
    losing.lose = 1
    losing.fail_reads = True
    with pytest.raises(Indeterminate):
        await md.put("k", b"v3", 3)
    assert md.settled == 0


async def test_a_read_back_that_fails_for_a_moment_is_retried(stores):
    losing, md = stores
    await md.create("k", b"v1")
    real_get = losing.get
    failing = [2]

    async def flaky_get(key):
        if failing[0]:
            failing[0] -= 1
            raise Unavailable("metadata unreachable")
        return await real_get(key)

    losing.get = flaky_get
    losing.lose = 1
    assert await md.put("k", b"v2", 1) == 2
    assert failing[0] == 0 and md.settled == 1


async def test_a_move_whose_checkpoint_answer_is_lost_completes(env):
    """Seed 712306: the move's checkpoint write applied but its answer was lost; every
    retry then failed with VersionMismatch and the stream stayed sealed."""
    losing = LosingStore(env.metadata)
    env.metadata = losing
    env.extra_channels = ["ch1"]
    store = await env.open()
    await store.create_stream(B, "s")
    await store.append(B, "s", [AppendRecord(b"before")])
    real_put = losing.put

    async def put(key, value, expected_version):
        if key.startswith("ckpt/"):
            losing.lose = 1
        return await real_put(key, value, expected_version)

    losing.put = put
    await store.move_stream(B, "s", "ch1")
    losing.put = real_put
    assert store.metadata.settled >= 1
    ack = await store.append(B, "s", [AppendRecord(b"after")])
    assert ack.start.seq_num == 1
    await store.move_stream(B, "s", "ch0")  # and back: the checkpoint version is right
    assert (await store.append(B, "s", [AppendRecord(b"back")])).start.seq_num == 2
    batch = await store.read(B, "s", seq_num=0, count=10)
    assert [bytes(r.body) for r in batch.records] == [b"before", b"after", b"back"]
    await store.close()


async def test_an_offload_publish_whose_answer_is_lost_does_not_fence_the_channel(env):
    """The publish batch (lease floor, catalog rows, checkpoints) applied but its answer
    was lost: the retry used the old lease version and the channel fenced itself."""
    losing = LosingStore(env.metadata)
    env.metadata = losing
    store = await env.open()
    await store.create_stream(B, "s")
    losing.lose = 0
    real_batch = losing.write_batch
    lost = []

    async def write_batch(ops):
        if not lost and any(op.key.startswith("ckpt/") for op in ops):
            lost.append(True)
            losing.lose = 1
        return await real_batch(ops)

    losing.write_batch = write_batch
    for i in range(60):
        await store.append(B, "s", [AppendRecord(b"%03d" % i + b"." * 100)])
    ch = store.channels["ch0"]
    for _ in range(100):
        await asyncio.sleep(0.02)
        if lost and not ch.offloader.queue:
            break
    assert lost and store.metadata.settled >= 1
    assert not ch.offloader.queue, "offload went on"
    assert ch.failed is None and ch.log._fenced is None
    ack = await store.append(B, "s", [AppendRecord(b"still appending")])
    assert ack.start.seq_num == 60
    await store.close()
    store = await env.open()
    batch = await store.read(B, "s", seq_num=0, count=100)
    assert len(batch.records) == 61
    await store.close()


async def test_version_mismatch_is_not_settled(stores):
    losing, md = stores
    await md.create("k", b"v1")
    with pytest.raises(VersionMismatch):
        await md.put("k", b"v2", 7)
