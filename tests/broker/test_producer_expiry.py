"""Idle idempotent producers' state expires (Kafka's producer.id.expiration.ms): memory does
not grow with every short-lived producer, and a producer that comes back is taken as an
unknown one, whatever its sequence, as Kafka takes it."""
from __future__ import annotations

import asyncio
import inspect

import pytest

from broker.kafka import Broker
from broker.producers import BatchRecord, ProducerEntry
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.produce_request import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from broker.protocol.records import Record, build_batch
from broker.services import produce

DAY = 86_400_000


class Conn:
    closed = False

    def close(self) -> None:
        self.closed = True


class Header:
    request_api_version = 9


@pytest.fixture
async def broker(memory_broker):
    b = await memory_broker(replicas=3)
    await b.topics.create("t", 1, {})
    now = [1_800_000_000_000]
    b.store.clock.now_ms = lambda: now[0]
    b.now = now  # (the test moves the broker's clock)
    return b


async def send(b: Broker, pid: int, first_seq: int, n: int = 1):
    """One idempotent batch of `n` records; the partition response."""
    recs = [Record(i, b.now[0], b"k", b"v") for i in range(n)]
    batch = bytes(build_batch(recs, producer_id=pid, producer_epoch=0,
                              base_sequence=first_seq))
    req = ProduceRequest(acks=-1, timeout_ms=5000, topic_data=[TopicProduceData(
        name="t", partition_data=[PartitionProduceData(index=0, records=batch)])])
    resp = await produce.handle(b, Conn(), Header(), req)
    if inspect.isawaitable(resp):
        resp = await resp
    return resp.responses[0].partition_responses[0]


async def test_an_idle_producer_expires_and_comes_back_as_a_new_one(broker):
    b = broker
    assert (await send(b, 7, 0, 2)).base_offset == 0
    assert (await send(b, 8, 0)).base_offset == 2
    assert (await send(b, 7, 0, 2)).base_offset == 0, "a retry is answered with its offset"
    b.now[0] += DAY - 1
    assert (await send(b, 8, 1)).base_offset == 3  # producer 8 writes again, 7 stays idle
    b.now[0] += 1
    assert b.producers.expire(b.now[0], DAY) == 1
    assert set(b.producers.partitions[("t", 0)]) == {8}
    # producer 7 is unknown now: its next batch is taken whatever its sequence...
    part = await send(b, 7, 5)
    assert (part.error_code, part.base_offset) == (ErrorCode.NONE, 4)
    # ...and it is tracked again from there
    part = await send(b, 7, 7)
    assert part.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    b.now[0] += 2 * DAY
    assert b.producers.expire(b.now[0], DAY) == 2
    assert b.producers.partitions == {}, "a partition without producers is dropped"
    part = await send(b, 8, 40)  # not rebuilt from the partition's tail: they expired
    assert (part.error_code, part.base_offset) == (ErrorCode.NONE, 5)


async def test_a_producer_with_a_batch_being_written_does_not_expire(broker):
    b = broker
    pending = asyncio.get_running_loop().create_future()
    st = await b.producers.state("t", 0)
    st[9] = ProducerEntry(0, last_ms=0)
    st[9].batches.append(BatchRecord(0, 0, 0, pending))
    assert b.producers.expire(b.now[0], DAY) == 0
    pending.set_result(None)
    assert b.producers.expire(b.now[0], DAY) == 1


async def test_the_expiry_task_runs_until_stopped(broker):
    b = broker
    await send(b, 3, 0)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(b.producers.run_expiry(stop, 100))
    b.now[0] += 100
    for _ in range(200):
        if not b.producers.partitions:
            break
        await asyncio.sleep(0.01)
    assert b.producers.partitions == {}
    stop.set()
    await asyncio.wait_for(task, 5)
