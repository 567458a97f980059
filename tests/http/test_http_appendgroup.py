"""Grouping an append session's waiting inputs: same outcomes as one by one."""
from __future__ import annotations

import pytest
from s2_sdk import (
    AppendInput,
    CommandRecord,
    FencingTokenMismatchError,
    Record,
    SeqNum,
    SeqNumMismatchError,
)

from s2core.http.appendgroup import merge, plan_group, split_ack
from s2core.http.proto import ParsedAppendInput as In
from s2core.records import AppendAck, AppendRecord, StreamPosition


def inp(n: int = 1, match=None, token=None, ts=None, command=False) -> In:
    headers = [(b"", b"fence")] if command else []
    return In([AppendRecord(b"x", headers, ts) for _ in range(n)], match, token)


@pytest.mark.parametrize(("inputs", "taken"), [
    ([inp()], 1),
    ([inp(), inp(2), inp(3)], 3),
    ([inp(command=True), inp()], 1),  # a fence first: alone
    ([inp(), inp(command=True), inp()], 1),
    ([inp(), inp(ts=5)], 1),  # client timestamps: not merged
    ([inp(ts=5), inp()], 1),
    ([inp(token="a"), inp(token="a"), inp()], 3),
    ([inp(token="a"), inp(token="b")], 1),
    ([inp(), inp(token="a")], 1),  # the first would not have been checked
    ([inp(2, match=4), inp(match=6), inp(match=7)], 3),
    ([inp(2, match=4), inp(match=5)], 1),  # would have failed on its own
    ([inp(), inp(match=1)], 1),  # where it lands depends on the stream: not merged
    ([inp(600), inp(400), inp(1)], 2),  # 1000 records at most
])
def test_plan_group(inputs, taken):
    assert plan_group(inputs, 1000, 1024 * 1024) == taken


def test_plan_group_respects_bytes():
    big = In([AppendRecord(b"x" * 1000)], None, None)
    assert plan_group([big, big, big], 1000, 2100) == 2


def test_merge_and_split():
    group = [inp(2, match=3, token="t"), inp(1), inp(3, match=6)]
    merged = merge(group)
    assert len(merged.records) == 6 and merged.match_seq_num == 3 and merged.fencing_token == "t"
    p = StreamPosition
    acks = split_ack(AppendAck(p(3, 50), p(9, 50), p(12, 60)), [2, 1, 3])
    assert [(a.start.seq_num, a.end.seq_num) for a in acks] == [(3, 5), (5, 6), (6, 9)]
    assert all(a.start.timestamp == a.end.timestamp == 50 and a.tail == p(12, 60)
               for a in acks)


@pytest.fixture
async def stream(basin):
    await basin.create_stream("g")
    return basin.stream("g")


async def test_session_failure_in_the_middle_keeps_earlier_inputs(stream):
    """Many inputs in flight: those before a failing condition apply, none after it."""
    ok = [AppendInput(records=[Record(body=b"%d" % i)]) for i in range(10)]
    bad = AppendInput(records=[Record(body=b"bad")], match_seq_num=999)
    later = [AppendInput(records=[Record(body=b"later")]) for _ in range(5)]
    acks = []
    with pytest.raises(SeqNumMismatchError) as exc:
        async with stream.append_session() as session:
            tickets = [await session.submit(x) for x in ok + [bad] + later]
            for t in tickets:
                acks.append(await t)
    assert exc.value.expected_seq_num == 10
    assert [(a.start.seq_num, a.end.seq_num) for a in acks] == [(i, i + 1) for i in range(10)]
    batch = await stream.read(start=SeqNum(0))
    assert [r.body for r in batch.records] == [b"%d" % i for i in range(10)]


async def test_session_with_fences_and_tokens(stream):
    inputs = [
        AppendInput(records=[Record(body=b"a")]),
        AppendInput(records=[CommandRecord.fence("t1")]),
        AppendInput(records=[Record(body=b"b")], fencing_token="t1"),
        AppendInput(records=[Record(body=b"c")], fencing_token="t1"),
        AppendInput(records=[Record(body=b"d")], fencing_token="t0"),
        AppendInput(records=[Record(body=b"e")], fencing_token="t1"),
    ]
    acks = []
    with pytest.raises(FencingTokenMismatchError):
        async with stream.append_session() as session:
            tickets = [await session.submit(x) for x in inputs]
            for t in tickets:
                acks.append(await t)
    assert [a.end.seq_num for a in acks] == [1, 2, 3, 4]
    batch = await stream.read(start=SeqNum(0), ignore_command_records=True)
    assert [r.body for r in batch.records] == [b"a", b"b", b"c"]


async def test_producer_with_match_seq_num(stream):
    async with stream.producer(match_seq_num=0) as producer:
        tickets = [await producer.submit(Record(body=b"%d" % i)) for i in range(300)]
        acks = [await t for t in tickets]
    assert [a.seq_num for a in acks] == list(range(300))
    batch = await stream.read(start=SeqNum(0))
    assert [r.body for r in batch.records] == [b"%d" % i for i in range(300)]
