"""The transaction coordinator (broker/transactions.py) and the Kafka APIs on it, through
the codec: Kafka's error codes for misuse, markers and the last stable offset, recovery of
a transaction a stop left prepared, and producer state that steps over markers."""
from __future__ import annotations

import json

import pytest

from broker.protocol import decode_request, encode_request
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages import _index
from broker.protocol.messages.add_offsets_to_txn_request import AddOffsetsToTxnRequest
from broker.protocol.messages.add_partitions_to_txn_request import (
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnTopic,
)
from broker.protocol.messages.describe_transactions_request import (
    DescribeTransactionsRequest,
)
from broker.protocol.messages.end_txn_request import EndTxnRequest
from broker.protocol.messages.init_producer_id_request import InitProducerIdRequest
from broker.protocol.messages.list_transactions_request import ListTransactionsRequest
from broker.protocol.records import Record, build_batch, iter_records, parse_batch_header
from broker.services import (
    add_offsets_to_txn,
    add_partitions_to_txn,
    describe_transactions,
    end_txn,
    init_producer_id,
    list_transactions,
)
from broker.transactions import TransactionCoordinator
from s2core.records import AppendRecord

BASIN = "test-basin"


async def call(b, service, request, version):
    header = _index.request_header.RequestHeader(service.API_KEY, version, 1, "test")
    frame = b"".join(encode_request(header, request))
    header, req = decode_request(memoryview(bytearray(frame))[4:])
    return await service.handle(b, None, header, req)


async def init(b, tid, timeout=60_000, version=4):
    r = await call(b, init_producer_id, InitProducerIdRequest(
        transactional_id=tid, transaction_timeout_ms=timeout, producer_id=-1,
        producer_epoch=-1), version)
    return r.error_code, r.producer_id, r.producer_epoch


async def add(b, tid, pid, epoch, topic="t", partitions=(0,), version=3):
    r = await call(b, add_partitions_to_txn, AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=tid, v3_and_below_producer_id=pid,
        v3_and_below_producer_epoch=epoch, v3_and_below_topics=[
            AddPartitionsToTxnTopic(name=topic, partitions=list(partitions))]), version)
    return {(t.name, p.partition_index): p.partition_error_code
            for t in r.results_by_topic_v3_and_below for p in t.results_by_partition}


async def end(b, tid, pid, epoch, commit, version=3):
    r = await call(b, end_txn, EndTxnRequest(transactional_id=tid, producer_id=pid,
                                             producer_epoch=epoch, committed=commit), version)
    return r.error_code


async def txn_produce(b, pid, epoch, seq, values, partition=0):
    """What Produce appends for a transactional batch (after its checks)."""
    await b.extensions["txn"].before_produce("t", partition, pid, epoch,
                                             E.INVALID_PRODUCER_EPOCH)
    raw = build_batch([Record(i, 1, None, v) for i, v in enumerate(values)], producer_id=pid,
                      producer_epoch=epoch, base_sequence=seq, transactional=True)
    await b.store.append(BASIN, b.stream("t", partition),
                         [AppendRecord(body=bytes(raw), timestamp=1, span=len(values))])


@pytest.fixture
async def broker(memory_broker):
    b = await memory_broker(basin=BASIN)
    await b.topics.create("t", 2, {})
    return b


async def test_misuse_gets_kafkas_error_codes(broker):
    b = broker
    assert (await init(b, "x", timeout=0))[0] == E.INVALID_TRANSACTION_TIMEOUT
    assert (await init(b, "x", timeout=900_001))[0] == E.INVALID_TRANSACTION_TIMEOUT
    code, pid, epoch = await init(b, "x")
    assert code == 0 and pid >= 0 and epoch == 0
    assert await end(b, "x", pid, epoch, True) == E.INVALID_TXN_STATE, "nothing to end"
    assert await add(b, "nope", pid, epoch) == {("t", 0): E.INVALID_PRODUCER_ID_MAPPING}
    assert await add(b, "x", pid + 1, epoch) == {("t", 0): E.INVALID_PRODUCER_ID_MAPPING}
    assert await add(b, "x", pid, epoch + 1) == {("t", 0): E.PRODUCER_FENCED}
    assert await add(b, "x", pid, epoch + 1, version=1) == {
        ("t", 0): E.INVALID_PRODUCER_EPOCH}, "old clients know no PRODUCER_FENCED"
    assert await add(b, "x", pid, epoch, partitions=(0, 5)) == {
        ("t", 0): E.OPERATION_NOT_ATTEMPTED, ("t", 5): E.UNKNOWN_TOPIC_OR_PARTITION}
    r = await call(b, add_offsets_to_txn, AddOffsetsToTxnRequest(
        transactional_id="x", producer_id=pid, producer_epoch=epoch, group_id=""), 3)
    assert r.error_code == E.INVALID_GROUP_ID
    with pytest.raises(Exception) as exc:  # a partition never added
        await txn_produce(b, pid, epoch, 0, [b"v"])
    assert exc.value.code == E.INVALID_TXN_STATE
    assert await add(b, "x", pid, epoch) == {("t", 0): E.NONE}
    await txn_produce(b, pid, epoch, 0, [b"v"])
    assert await end(b, "x", pid, epoch, True) == E.NONE
    assert await end(b, "x", pid, epoch, True) == E.NONE, "a retry of a commit that went in"
    assert await end(b, "x", pid, epoch, False) == E.INVALID_TXN_STATE
    # a new producer with the id fences this one
    code, pid2, epoch2 = await init(b, "x")
    assert (code, pid2, epoch2) == (0, pid, epoch + 1)
    assert await end(b, "x", pid, epoch, True) == E.PRODUCER_FENCED


async def test_markers_and_the_last_stable_offset(broker):
    b = broker
    txns = b.extensions["txn"]
    _, pid, epoch = await init(b, "x")
    await add(b, "x", pid, epoch, partitions=(0, 1))
    await b.store.append(BASIN, b.stream("t", 0), [AppendRecord(
        body=bytes(build_batch([Record(0, 1, None, b"plain")])), timestamp=1)])
    await txn_produce(b, pid, epoch, 0, [b"a", b"b"])
    await b.store.append(BASIN, b.stream("t", 0), [AppendRecord(
        body=bytes(build_batch([Record(0, 1, None, b"plain2")])), timestamp=1)])
    assert txns.last_stable("t", 0, 4) == 1, "held at the open transaction's first offset"
    assert txns.last_stable("t", 1, 0) == 0
    assert await end(b, "x", pid, epoch, False) == E.NONE
    assert txns.last_stable("t", 0, 5) == 5
    assert txns.aborted_between("t", 0, 0, 5) == [[pid, 1]]
    assert txns.aborted_between("t", 0, 4, 5) == [[pid, 1]], "its marker is at offset 4"
    assert txns.aborted_between("t", 0, 5, 9) == []
    batch = await b.store.read(BASIN, b.stream("t", 0), seq_num=4, count=1)
    h = parse_batch_header(batch.records[0].body)
    assert h.is_control and h.is_transactional and h.producer_id == pid
    (marker,) = iter_records(batch.records[0].body)
    assert bytes(marker.key) == b"\x00\x00\x00\x00", "ABORT"
    # no transactional batch went to partition 1: its marker is written all the same
    batch = await b.store.read(BASIN, b.stream("t", 1), seq_num=0, count=1)
    assert parse_batch_header(batch.records[0].body).is_control


async def test_a_prepared_transaction_is_finished_at_start(broker):
    b = broker
    _, pid, epoch = await init(b, "x")
    await add(b, "x", pid, epoch)
    await txn_produce(b, pid, epoch, 0, [b"a"])
    st = b.extensions["txn"].states["x"]
    st.state = "PrepareCommit"  # as a stop between the two writes of an EndTxn leaves it
    await b.extensions["txn"]._save(st)
    fresh = TransactionCoordinator(b)
    await fresh.start()
    assert fresh.states["x"].state == "CompleteCommit"
    await fresh.partition("t", 0)
    assert fresh.last_stable("t", 0, 2) == 2
    batch = await b.store.read(BASIN, b.stream("t", 0), seq_num=1, count=1)
    (marker,) = iter_records(batch.records[0].body)
    assert bytes(marker.key) == b"\x00\x00\x00\x01", "COMMIT"
    row = json.loads((await b.store.metadata.get("kafka/txn/x")).value)
    assert row["state"] == "CompleteCommit" and row["pid"] == pid


async def test_producer_state_rebuilt_over_markers(broker):
    b = broker
    _, pid, epoch = await init(b, "x")
    await add(b, "x", pid, epoch)
    await txn_produce(b, pid, epoch, 0, [b"a", b"b"])
    await end(b, "x", pid, epoch, True)
    b.producers.partitions.clear()
    b.producers._rebuilt.clear()
    st = await b.producers.state("t", 0)
    assert st[pid].batches[-1].last_seq == 1, "the marker carries no sequence"


async def test_describe_and_list(broker):
    b = broker
    _, pid, epoch = await init(b, "x")
    await add(b, "x", pid, epoch, partitions=(1,))
    await init(b, "y")
    r = await call(b, describe_transactions,
                   DescribeTransactionsRequest(transactional_ids=["x", "zz"]), 0)
    x, zz = r.transaction_states
    assert (x.transaction_state, x.producer_id, [(t.topic, t.partitions) for t in x.topics]) \
        == ("Ongoing", pid, [("t", [1])])
    assert zz.error_code == E.TRANSACTIONAL_ID_NOT_FOUND
    r = await call(b, list_transactions, ListTransactionsRequest(
        state_filters=["Ongoing", "Bogus"], producer_id_filters=[]), 0)
    assert [s.transactional_id for s in r.transaction_states] == ["x"]
    assert r.unknown_state_filters == ["Bogus"]
    r = await call(b, list_transactions, ListTransactionsRequest(
        state_filters=[], producer_id_filters=[]), 0)
    assert sorted(s.transactional_id for s in r.transaction_states) == ["x", "y"]


async def test_an_expired_transaction_is_aborted_and_fenced(broker):
    b = broker
    now = [1_800_000_000_000]
    b.store.clock.now_ms = lambda: now[0]
    _, pid, epoch = await init(b, "x", timeout=1000)
    await add(b, "x", pid, epoch)
    await txn_produce(b, pid, epoch, 0, [b"a"])
    assert await b.extensions["txn"].abort_expired() == 0
    now[0] += 1001
    assert await b.extensions["txn"].abort_expired() == 1
    assert b.extensions["txn"].aborted_between("t", 0, 0, 2) == [[pid, 0]]
    assert await end(b, "x", pid, epoch, True) == E.PRODUCER_FENCED


async def test_offsets_staged_by_an_open_transaction_are_unstable(broker):
    from broker.protocol.messages.offset_fetch_request import (
        OffsetFetchRequest,
        OffsetFetchRequestTopic,
    )
    from broker.protocol.messages.txn_offset_commit_request import (
        TxnOffsetCommitRequest,
        TxnOffsetCommitRequestPartition,
        TxnOffsetCommitRequestTopic,
    )
    from broker.services import offset_fetch, txn_offset_commit
    b = broker
    _, pid, epoch = await init(b, "x")
    r = await call(b, add_offsets_to_txn, AddOffsetsToTxnRequest(
        transactional_id="x", producer_id=pid, producer_epoch=epoch, group_id="g"), 3)
    assert r.error_code == 0
    r = await call(b, txn_offset_commit, TxnOffsetCommitRequest(
        transactional_id="x", group_id="g", producer_id=pid, producer_epoch=epoch,
        generation_id=-1, member_id="", group_instance_id=None,
        topics=[TxnOffsetCommitRequestTopic(name="t", partitions=[
            TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=7,
                                            committed_leader_epoch=-1,
                                            committed_metadata="m")])]), 3)
    assert r.topics[0].partitions[0].error_code == 0

    async def fetch(stable):
        r = await call(b, offset_fetch, OffsetFetchRequest(
            group_id="g", topics=[OffsetFetchRequestTopic(name="t", partition_indexes=[0])],
            require_stable=stable), 7)
        p = r.topics[0].partitions[0]
        return p.error_code, p.committed_offset

    assert await fetch(True) == (E.UNSTABLE_OFFSET_COMMIT, -1)
    assert await fetch(False) == (0, -1), "not committed yet"
    assert await end(b, "x", pid, epoch, True) == 0
    assert await fetch(True) == (0, 7)


async def test_unused_transactional_ids_expire(broker):
    from broker.transactions import ID_EXPIRATION_MS
    b = broker
    now = [1_800_000_000_000]
    b.store.clock.now_ms = lambda: now[0]
    _, pid, epoch = await init(b, "old")
    await add(b, "old", pid, epoch)
    assert await end(b, "old", pid, epoch, False) == 0
    now[0] += ID_EXPIRATION_MS + 1
    await b.extensions["txn"].abort_expired()
    assert "old" not in b.extensions["txn"].states
    assert await b.store.metadata.get("kafka/txn/old") is None
    code, pid2, epoch2 = await init(b, "old")
    assert code == 0 and epoch2 == 0 and pid2 != pid
