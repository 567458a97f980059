"""Appends and reads (unary and sessions) through the official s2-sdk client."""
from __future__ import annotations

import asyncio

import pytest
from s2_sdk import (
    AppendInput,
    CommandRecord,
    Compression,
    FencingTokenMismatchError,
    ReadLimit,
    ReadUnwrittenError,
    Record,
    S2ServerError,
    SeqNum,
    SeqNumMismatchError,
    TailOffset,
    Timestamp,
)


@pytest.fixture
async def stream(basin):
    await basin.create_stream("events")
    return basin.stream("events")


def recs(*bodies: bytes, **kw) -> AppendInput:
    return AppendInput(records=[Record(body=b) for b in bodies], **kw)


async def test_append_read_and_tail(stream):
    ack = await stream.append(AppendInput(records=[
        Record(body=b"one", headers=[(b"k", b"v"), (b"k2", b"")]),
        Record(body=b"\x00\xff binary", timestamp=1000),
    ]))
    assert (ack.start.seq_num, ack.end.seq_num, ack.tail.seq_num) == (0, 2, 2)
    ack2 = await stream.append(recs(b"three"))
    assert ack2.start.seq_num == 2 and ack2.end.seq_num == 3
    assert ack2.start.timestamp >= ack.end.timestamp  # timestamps never go back
    tail = await stream.check_tail()
    assert tail.seq_num == 3 and tail.timestamp == ack2.end.timestamp
    batch = await stream.read(start=SeqNum(0))
    assert [r.seq_num for r in batch.records] == [0, 1, 2]
    assert batch.records[0].headers == [(b"k", b"v"), (b"k2", b"")]
    assert batch.records[1].body == b"\x00\xff binary"
    assert batch.tail.seq_num == 3
    assert [r.body for r in (await stream.read(start=SeqNum(1), limit=ReadLimit(count=1))
                             ).records] == [b"\x00\xff binary"]


async def test_read_by_timestamp_and_tail_offset(basin):
    from s2_sdk import StreamConfig, Timestamping, TimestampingMode
    # infinite retention: these timestamps are far older than any age limit
    await basin.create_stream("ts", config=StreamConfig(
        retention_policy="infinite",
        timestamping=Timestamping(mode=TimestampingMode.CLIENT_REQUIRE)))
    stream = basin.stream("ts")
    await stream.append(AppendInput(records=[Record(body=str(t).encode(), timestamp=t)
                                             for t in (100, 200, 300, 400)]))
    batch = await stream.read(start=Timestamp(250))
    assert [r.body for r in batch.records] == [b"300", b"400"]
    assert [r.timestamp for r in batch.records] == [300, 400]
    batch = await stream.read(start=Timestamp(0), until_timestamp=300)
    assert [r.body for r in batch.records] == [b"100", b"200"]
    batch = await stream.read(start=TailOffset(1))
    assert [r.body for r in batch.records] == [b"400"]
    batch = await stream.read(start=TailOffset(10))
    assert len(batch.records) == 4


async def test_read_past_tail_is_416_unless_clamped(stream):
    await stream.append(recs(b"a", b"b"))
    with pytest.raises(ReadUnwrittenError) as exc:
        await stream.read(start=SeqNum(5))
    assert exc.value.tail.seq_num == 2 and exc.value.status_code == 416
    batch = await stream.read(start=SeqNum(5), clamp_to_tail=True)
    assert batch.records == [] and batch.tail.seq_num == 2
    # at the tail itself: no records, no error
    assert (await stream.read(start=SeqNum(2))).records == []


async def test_match_seq_num(stream):
    await stream.append(recs(b"a", match_seq_num=0))
    with pytest.raises(SeqNumMismatchError) as exc:
        await stream.append(recs(b"b", match_seq_num=0))
    assert exc.value.expected_seq_num == 1 and exc.value.status_code == 412
    await stream.append(recs(b"b", match_seq_num=1))
    assert (await stream.check_tail()).seq_num == 2


async def test_fence_and_fencing_token(stream):
    await stream.append(AppendInput(records=[CommandRecord.fence("writer-1")]))
    await stream.append(recs(b"ok", fencing_token="writer-1"))
    with pytest.raises(FencingTokenMismatchError) as exc:
        await stream.append(recs(b"zombie", fencing_token="writer-0"))
    assert exc.value.expected_fencing_token == "writer-1"
    batch = await stream.read(start=SeqNum(0))
    assert batch.records[0].is_command_record() and batch.records[0].body == b"writer-1"
    assert [r.body for r in batch.records[1:]] == [b"ok"]
    filtered = await stream.read(start=SeqNum(0), ignore_command_records=True)
    assert [r.body for r in filtered.records] == [b"ok"]


async def test_trim(stream):
    await stream.append(recs(*[b"%d" % i for i in range(5)]))
    await stream.append(AppendInput(records=[CommandRecord.trim(3)]))
    batch = await stream.read(start=SeqNum(0))
    assert [r.seq_num for r in batch.records] == [3, 4, 5]
    assert batch.records[-1].is_command_record()


async def test_invalid_command_record_is_422(stream):
    bad = Record(body=b"short", headers=[(b"", b"trim")])
    with pytest.raises(S2ServerError) as exc:
        await stream.append(AppendInput(records=[bad]))
    assert exc.value.status_code == 422 and exc.value.code == "invalid"
    with pytest.raises(S2ServerError) as exc:
        await stream.append(AppendInput(records=[Record(body=b"", headers=[(b"", b"nope")])]))
    assert exc.value.status_code == 422
    assert (await stream.check_tail()).seq_num == 0


async def test_missing_stream_is_404(basin):
    with pytest.raises(S2ServerError) as exc:
        await basin.stream("nope").append(recs(b"x"))
    assert exc.value.status_code == 404 and exc.value.code == "stream_not_found"
    with pytest.raises(S2ServerError) as exc:
        await basin.stream("nope").read(start=SeqNum(0))
    assert exc.value.status_code == 404


async def test_append_session_acks_in_order(stream):
    async with stream.append_session() as session:
        tickets = [await session.submit(recs(b"%d" % i, b"x")) for i in range(20)]
        acks = [await t for t in tickets]
    assert [a.start.seq_num for a in acks] == list(range(0, 40, 2))
    assert all(a.end.seq_num == a.start.seq_num + 2 for a in acks)
    assert (await stream.check_tail()).seq_num == 40


async def test_append_session_condition_failure(stream):
    await stream.append(recs(b"a"))
    with pytest.raises(SeqNumMismatchError) as exc:
        async with stream.append_session() as session:
            t = await session.submit(recs(b"b", match_seq_num=7))
            await t
    assert exc.value.expected_seq_num == 1
    assert (await stream.check_tail()).seq_num == 1


async def test_append_session_with_compression(server, basin):
    await basin.create_stream("big")
    payload = bytes(range(256)) * 64  # 16 KiB, compressible -> compressed frames
    for comp in (Compression.ZSTD, Compression.GZIP):
        async with server.sdk(compression=comp) as client:
            stream = client.basin(basin.name).stream("big")
            async with stream.append_session() as session:
                ack = await (await session.submit(recs(payload, payload)))
            batch = await stream.read(start=SeqNum(ack.start.seq_num))
            assert [r.body for r in batch.records] == [payload, payload]
            got = [b async for b in stream.read_session(start=SeqNum(ack.start.seq_num),
                                                        limit=ReadLimit(count=2))]
            assert [r.body for b in got for r in b.records] == [payload, payload]


async def test_bounded_read_session(stream):
    for i in range(3):
        await stream.append(recs(b"a%d" % i, b"b%d" % i))
    got = [r async for b in stream.read_session(start=SeqNum(1), limit=ReadLimit(count=4))
           for r in b.records]
    assert [r.seq_num for r in got] == [1, 2, 3, 4]
    # bounded by bytes: each record here is 8 + 2 bytes
    got = [r async for b in stream.read_session(start=SeqNum(0), limit=ReadLimit(bytes=25))
           for r in b.records]
    assert len(got) == 3
    # bounded, at the tail, no wait: ends at once
    got = [b async for b in stream.read_session(start=SeqNum(6), limit=ReadLimit(count=5))]
    assert all(not b.records for b in got)


async def test_following_read_session(stream):
    got: list[bytes] = []

    async def follow():
        async for batch in stream.read_session(start=SeqNum(0)):
            got.extend(r.body for r in batch.records)
            if len(got) >= 5:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)  # past a heartbeat (0.2 s in these tests)
    for i in range(5):
        await stream.append(recs(b"%d" % i))
        await asyncio.sleep(0.02)
    await asyncio.wait_for(task, 5)
    assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_read_session_waits_then_ends(stream):
    await stream.append(recs(b"a"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got = [b async for b in stream.read_session(start=SeqNum(0), limit=ReadLimit(count=10),
                                                wait=1)]
    assert 0.9 <= loop.time() - t0 < 5
    assert [r.body for b in got for r in b.records] == [b"a"]


async def test_unary_read_long_poll(stream):
    async def later():
        await asyncio.sleep(0.3)
        await stream.append(recs(b"late"))

    task = asyncio.create_task(later())
    batch = await stream.read(start=SeqNum(0), wait=3)
    await task
    assert [r.body for r in batch.records] == [b"late"]


async def test_create_stream_on_append_and_read(s2):
    from s2_sdk import BasinConfig
    await s2.create_basin("auto-basin", config=BasinConfig(create_stream_on_append=True,
                                                           create_stream_on_read=True))
    b = s2.basin("auto-basin")
    await b.stream("made-by-append").append(recs(b"x"))
    assert (await b.stream("made-by-read").read(start=SeqNum(0))).records == []
    names = [s.name for s in (await b.list_streams()).items]
    assert names == ["made-by-append", "made-by-read"]


async def test_producer(stream):
    async with stream.producer() as producer:
        tickets = [await producer.submit(Record(body=b"%d" % i)) for i in range(50)]
        acks = [await t for t in tickets]
    assert sorted(a.seq_num for a in acks) == list(range(50))


async def test_more_than_a_thousand_requests_on_one_connection(basin):
    # Hypercorn's default recycles a connection after 1000 requests and loses the answer to
    # the request that crossed the line; the SDK keeps one connection for everything.
    streams = [basin.stream(f"c{w}") for w in range(16)]
    for s in streams:
        await basin.create_stream(s.name)

    async def loop(s):
        for _ in range(70):
            await s.append(recs(b"x"))

    async with asyncio.timeout(30):
        await asyncio.gather(*(loop(s) for s in streams))
    assert [(await s.check_tail()).seq_num for s in streams] == [70] * 16


@pytest.mark.parametrize("comp", [Compression.ZSTD, Compression.GZIP])
async def test_compressed_unary_requests(server, comp):
    """With compression on, the SDK compresses request bodies (Content-Encoding)."""
    from s2_sdk import BasinConfig, StreamConfig
    payload = b"compressible " * 1000
    async with server.sdk(compression=comp) as s2:
        await s2.create_basin("zip-basin", config=BasinConfig(create_stream_on_read=True))
        basin = s2.basin("zip-basin")
        await basin.create_stream("z", config=StreamConfig(retention_policy="infinite"))
        ack = await basin.stream("z").append(AppendInput(records=[Record(body=payload)] * 3))
        assert ack.end.seq_num == 3
        batch = await basin.stream("z").read(start=SeqNum(0))
        assert [r.body for r in batch.records] == [payload] * 3
