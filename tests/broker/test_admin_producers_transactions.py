"""DescribeProducers and ListTransactions through the codec at every version served:
a partition's idempotent producers as the broker tracks them; no transactions."""
from __future__ import annotations

import inspect

import pytest

from broker.protocol import decode_request, decode_response, encode_request, encode_response
from broker.protocol.errors import ErrorCode
from broker.protocol.messages import _index
from broker.protocol.messages.describe_producers_request import (
    DescribeProducersRequest,
    TopicRequest,
)
from broker.protocol.messages.list_transactions_request import ListTransactionsRequest
from broker.protocol.messages.produce_request import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from broker.protocol.records import Record, build_batch
from broker.services import describe_producers, list_transactions, produce


class Conn:
    closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
async def broker(memory_broker):
    b = await memory_broker()
    await b.topics.create("t", 2, {})
    b.store.clock.now_ms = lambda: 1_800_000_000_000
    return b


async def call(b, svc, version, request):
    header = _index.request_header.RequestHeader(svc.API_KEY, version, 5, "test")
    frame = b"".join(encode_request(header, request))
    header, request = decode_request(memoryview(bytearray(frame))[4:])
    resp = await svc.handle(b, Conn(), header, request)
    if inspect.isawaitable(resp):
        resp = await resp
    wire = b"".join(encode_response(5, resp, svc.API_KEY, version))
    return decode_response(memoryview(wire)[4:], svc.API_KEY, version)[1]


async def test_describe_producers_lists_each_partitions_producers(broker):
    for pid, seqs in ((11, (0, 3)), (12, (0,))):
        for first in seqs:
            batch = bytes(build_batch([Record(i, 1, b"k", b"v") for i in range(3)],
                                      producer_id=pid, producer_epoch=2,
                                      base_sequence=first))
            await call(broker, produce, 9, ProduceRequest(acks=-1, timeout_ms=1000, topic_data=[
                TopicProduceData(name="t", partition_data=[
                    PartitionProduceData(index=0, records=batch)])]))
    resp = await call(broker, describe_producers, 0, DescribeProducersRequest(topics=[
        TopicRequest(name="t", partition_indexes=[0, 1, 7]),
        TopicRequest(name="nope", partition_indexes=[0])]))
    [t, nope] = resp.topics
    p0, p1, p7 = t.partitions
    assert [(s.producer_id, s.producer_epoch, s.last_sequence, s.last_timestamp,
             s.coordinator_epoch, s.current_txn_start_offset) for s in p0.active_producers] == [
        (11, 2, 5, 1_800_000_000_000, -1, -1), (12, 2, 2, 1_800_000_000_000, -1, -1)]
    assert (p1.error_code, p1.active_producers) == (0, [])
    assert p7.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert nope.partitions[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


@pytest.mark.parametrize("version", range(list_transactions.VERSIONS[0],
                                          list_transactions.VERSIONS[1] + 1))
async def test_list_transactions_is_empty_and_names_unknown_states(broker, version):
    resp = await call(broker, list_transactions, version, ListTransactionsRequest(
        state_filters=["Ongoing", "Sleeping"], producer_id_filters=[]))
    assert (resp.error_code, resp.transaction_states, resp.unknown_state_filters) == \
        (0, [], ["Sleeping"])
