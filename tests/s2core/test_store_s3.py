"""The whole store on a real S3 API server (moto): WAL replicas in three buckets with a
write quorum of two, segments in a fourth, SQLite metadata; data survives a restart and
reads come back from S3 segments once the tail is evicted; sections rewritten by a
compaction replace their S3 objects."""
import asyncio

from test_objstore_contract import moto_endpoint, s3_store  # noqa: F401 - fixture

from s2core.channel import ChannelConfig
from s2core.metadata.sqlite import SqliteMetadataStore
from s2core.records import AppendRecord
from s2core.store import ChannelSpec, StreamStore

B = "s3-basin-1"


async def test_store_on_s3(moto_endpoint, tmp_path):  # noqa: F811
    replicas = [s3_store(moto_endpoint) for _ in range(3)]
    segments = s3_store(moto_endpoint)
    cfg = ChannelConfig(chunk_target_bytes=512 * 1024, linger_s=0.002,
                        offload_target_bytes=16 * 1024, offload_interval_s=0.05,
                        keep_in_memory_fraction=0.0)

    async def open_store():
        md = SqliteMetadataStore(tmp_path / "md.db")
        s = await StreamStore.open(md, segments, [ChannelSpec("ch0", replicas, 2, cfg)])
        await s.ensure_basin(B)
        return s, md

    store, md = await open_store()
    await store.create_stream(B, "s", {"retention_policy": {"infinite": {}}})
    acks = await asyncio.gather(*(store.append(B, "s", [AppendRecord(b"r%03d" % i * 50)])
                                  for i in range(100)))
    assert sorted(a.start.seq_num for a in acks) == list(range(100))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if await segments.list("segments/"):
            break
    assert await segments.list("segments/"), "offloaded to S3 segments"
    await store.close()
    await md.close()
    store, md = await open_store()
    batch = await store.read(B, "s", seq_num=0, count=1000)
    bodies = sorted(r.body for r in batch.records)
    assert bodies == sorted(b"r%03d" % i * 50 for i in range(100))
    assert (await store.append(B, "s", [AppendRecord(b"after")])).start.seq_num == 100
    await store.close()
    await md.close()


async def test_rewritten_sections_on_s3(moto_endpoint, tmp_path):  # noqa: F811
    replicas = [s3_store(moto_endpoint) for _ in range(3)]
    segments = s3_store(moto_endpoint)
    cfg = ChannelConfig(offload_target_bytes=4096, offload_interval_s=3600)
    md = SqliteMetadataStore(tmp_path / "md.db")
    store = await StreamStore.open(md, segments, [ChannelSpec("ch0", replicas, 2, cfg)])
    try:
        await store.ensure_basin(B)
        await store.create_stream(B, "c")
        for i in range(0, 60, 6):
            await store.append(B, "c", [AppendRecord(b"%02d" % j + b"." * 200)
                                        for j in range(i, i + 6)])
        while await store.channels["ch0"].offloader.offload_once():
            pass
        before = set(await segments.list("segments/"))
        assert before
        stats = await store.rewrite_offloaded(
            B, "c", 10**9, lambda r: r._replace(body=r.body[:2]) if int(r.body[:2]) % 3 == 0
            else None)
        assert stats.records_dropped == 40 and not stats.conflict
        after = set(await segments.list("segments/"))
        assert not before & after, "the old objects are deleted"
        assert all(k.startswith("segments/compacted/") for k in after)
        batch = await store.read(B, "c", seq_num=0, count=1000)
        assert [(r.seq_num, r.body) for r in batch.records] == [
            (i, b"%02d" % i) for i in range(0, 60, 3)]
    finally:
        await store.close()
        await md.close()
