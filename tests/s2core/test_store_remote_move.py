"""A stream moved to a channel another process serves (`move_stream(remote=True)`, used by
the Kafka layer's partition reassignment): two stores sharing metadata and segments, one
channel each; the move resumes after a stop between the seal and the link; the other
store serves the stream from then on, with every record; cached rows of streams served
elsewhere are read again."""
from __future__ import annotations

import pytest

from s2core.channel import ChannelConfig
from s2core.errors import NotServed, Sealed
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.records import AppendRecord
from s2core.store import ChannelSpec, StreamStore

B = "test-basin"


async def open_store(md, seg, channel: str) -> StreamStore:
    spec = ChannelSpec(channel, [MemoryObjectStore(f"{channel}-r{i}") for i in range(3)], 2,
                       ChannelConfig(offload_target_bytes=4096, offload_interval_s=0.02))
    store = await StreamStore.open(md, seg, [spec])
    await store.ensure_basin(B)
    return store


def bodies(batch):
    return [r.body for r in batch.records]


async def test_a_stream_moves_to_another_process_and_a_stopped_move_resumes():
    md, seg = MemoryMetadataStore(), MemoryObjectStore("segments")
    a = await open_store(md, seg, "ch0")
    b = await open_store(md, seg, "ch1")
    try:
        await a.create_stream(B, "s")
        await a.append(B, "s", [AppendRecord(b"x"), AppendRecord(b"y")])
        with pytest.raises(NotServed):  # b caches the row: the stream is a's
            await b.append(B, "s", [AppendRecord(b"no")])
        await a.seal_stream(B, "s")  # (a stop here, in the middle of a move)
        with pytest.raises(Sealed):
            await a.append(B, "s", [AppendRecord(b"no")])
        await a.move_stream(B, "s", "ch1", remote=True)  # finished after the restart
        with pytest.raises(NotServed):
            await a.append(B, "s", [AppendRecord(b"no")])
        ack = await b.append(B, "s", [AppendRecord(b"z")])  # its cached row is read again
        assert ack.start.seq_num == 2
        assert bodies(await b.read(B, "s", seq_num=0)) == [b"x", b"y", b"z"]
        # back again: a serves it with everything b appended
        await b.move_stream(B, "s", "ch0", remote=True)
        await a.append(B, "s", [AppendRecord(b"w")])
        assert bodies(await a.read(B, "s", seq_num=0)) == [b"x", b"y", b"z", b"w"]
    finally:
        await a.close()
        await b.close()


async def test_a_cached_row_of_a_stream_served_elsewhere_expires():
    md, seg = MemoryMetadataStore(), MemoryObjectStore("segments")
    a = await open_store(md, seg, "ch0")
    b = await open_store(md, seg, "ch1")
    try:
        await a.create_stream(B, "s")
        assert (await b._handle(B, "s")).chain[-1]["channel"] == "ch0"
        await a.move_stream(B, "s", "ch1", remote=True)
        assert (await b._handle(B, "s")).chain[-1]["channel"] == "ch0", "cached for a while"
        b.remote_handle_ttl_s = 0.0
        assert (await b._handle(B, "s")).chain[-1]["channel"] == "ch1"
        a.remote_handle_ttl_s = 0.0
        await b.move_stream(B, "s", "ch0", remote=True)
        assert (await a._handle(B, "s")).chain[-1]["channel"] == "ch0"
    finally:
        await a.close()
        await b.close()
