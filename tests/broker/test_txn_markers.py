"""WriteTxnMarkers, as another broker's transaction coordinator sends it (docs/decisions/
0020): markers into a partition, a marker from an older coordinator refused, the groups'
staged offsets applied or dropped by a `__consumer_offsets` marker, CLUSTER_ACTION, and
the internal listener: SCRAM with the cluster's secret, nothing served before it, a wrong
secret refused."""
from __future__ import annotations

import asyncio

import pytest
from test_transactions import BASIN, add, call, init, txn_produce

from broker.groups.journal import partition_of
from broker.interbroker import INTERNAL_USER, InterBroker, ScramClient, _Link, cluster_secret
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages.add_offsets_to_txn_request import AddOffsetsToTxnRequest
from broker.protocol.messages.txn_offset_commit_request import (
    TxnOffsetCommitRequest,
    TxnOffsetCommitRequestPartition,
    TxnOffsetCommitRequestTopic,
)
from broker.protocol.messages.write_txn_markers_request import (
    WritableTxnMarker,
    WritableTxnMarkerTopic,
    WriteTxnMarkersRequest,
)
from broker.sasl import SaslUsers
from broker.services import add_offsets_to_txn, txn_offset_commit, write_txn_markers
from broker.transactions import GROUPS_TOPIC


@pytest.fixture
async def broker(memory_broker):
    b = await memory_broker(basin=BASIN)
    await b.topics.create("t", 2, {})
    return b


def markers(pid, epoch, commit, cepoch, topics):
    return WriteTxnMarkersRequest(markers=[WritableTxnMarker(
        producer_id=pid, producer_epoch=epoch, transaction_result=commit,
        coordinator_epoch=cepoch,
        topics=[WritableTxnMarkerTopic(name=t, partition_indexes=ps)
                for t, ps in topics.items()])])


def codes(resp):
    return {(t.name, p.partition_index): p.error_code
            for m in resp.markers for t in m.topics for p in t.partitions}


async def hw(b, p=0):
    return (await b.partition_bounds("t", p))[1]


async def test_a_marker_ends_the_partitions_transaction_and_an_older_coordinator_is_fenced(
        broker):
    b = broker
    txn = b.extensions["txn"]
    _, pid, epoch = await init(b, "x")
    assert await add(b, "x", pid, epoch, partitions=(0, 1)) == {("t", 0): 0, ("t", 1): 0}
    await txn_produce(b, pid, epoch, 0, [b"a", b"b"])
    assert txn.last_stable("t", 0, await hw(b)) == 0
    r = await call(b, write_txn_markers, markers(pid, epoch, True, 5, {"t": [0, 1], "u": [0]}),
                   1)
    assert codes(r) == {("t", 0): E.NONE, ("t", 1): E.NONE,
                        ("u", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
    assert txn.last_stable("t", 0, await hw(b)) == await hw(b) == 3  # 2 records, 1 marker
    # the next transaction of the producer; a late marker of coordinator epoch 4 is refused
    await txn.add_partitions("x", pid, epoch, [("t", 0)], E.INVALID_PRODUCER_EPOCH)
    await txn_produce(b, pid, epoch, 2, [b"c"])
    r = await call(b, write_txn_markers, markers(pid, epoch, False, 4, {"t": [0]}), 1)
    assert codes(r) == {("t", 0): E.TRANSACTION_COORDINATOR_FENCED}
    assert txn.last_stable("t", 0, await hw(b)) == 3, "still open"
    r = await call(b, write_txn_markers, markers(pid, epoch, False, 5, {"t": [0]}), 1)
    assert codes(r) == {("t", 0): E.NONE}
    assert txn.aborted_between("t", 0, 0, 10) == [[pid, 3]]


async def test_write_txn_markers_needs_cluster_action(memory_broker):
    b = await memory_broker(basin=BASIN, authorizer=True)
    await b.topics.create("t", 1, {})
    r = await call(b, write_txn_markers, markers(7, 0, True, 0, {"t": [0]}), 1)
    assert codes(r) == {("t", 0): E.CLUSTER_AUTHORIZATION_FAILED}
    assert await hw(b) == 0


async def stage(b, tid, pid, epoch, group, offsets):
    r = await call(b, txn_offset_commit, TxnOffsetCommitRequest(
        transactional_id=tid, group_id=group, producer_id=pid, producer_epoch=epoch,
        topics=[TxnOffsetCommitRequestTopic(name="t", partitions=[
            TxnOffsetCommitRequestPartition(partition_index=p, committed_offset=o)
            for p, o in offsets.items()])]), 2)
    return [p.error_code for t in r.topics for p in t.partitions]


async def test_a_groups_marker_applies_the_staged_offsets_on_commit_only(broker):
    b = broker
    txn, groups = b.extensions["txn"], b.extensions["groups"]
    _, pid, epoch = await init(b, "x")
    for commit, offset in ((False, 5), (True, 7)):
        r = await call(b, add_offsets_to_txn, AddOffsetsToTxnRequest(
            transactional_id="x", producer_id=pid, producer_epoch=epoch, group_id="g"), 3)
        assert r.error_code == 0
        assert await stage(b, "x", pid, epoch, "g", {0: offset, 1: offset}) == [0, 0]
        assert txn.pending_offsets("g") == {("t", 0), ("t", 1)}
        assert await stage(b, "x", pid + 1, epoch, "g", {0: 1}) == \
            [E.INVALID_PRODUCER_ID_MAPPING]
        r = await call(b, write_txn_markers, markers(
            pid, epoch, commit, 0, {GROUPS_TOPIC: [partition_of("g")]}), 1)
        assert codes(r) == {(GROUPS_TOPIC, partition_of("g")): E.NONE}
        assert txn.pending_offsets("g") == set()
        entry = groups.offsets.get("g", "t", 0)
        assert (entry.offset if entry else None) == (7 if commit else None)
        await txn.end_txn("x", pid, epoch, commit, E.INVALID_PRODUCER_EPOCH)
    # staged offsets are kept in metadata: a restarted coordinator still has them
    await txn.add_offsets("x", pid, epoch, "g", E.INVALID_PRODUCER_EPOCH)
    assert await stage(b, "x", pid, epoch, "g", {1: 9}) == [0]
    fresh = type(txn)(b)
    await fresh.start()
    assert fresh.pending_offsets("g") == {("t", 1)}


async def test_the_internal_listener_takes_the_clusters_secret_only(broker):
    b = broker
    ib = InterBroker(b)
    await ib.start("127.0.0.1", 0, "127.0.0.1")
    try:
        assert ib.secret == await cluster_secret(b.store.metadata), "kept in metadata"
        _, pid, epoch = await init(b, "x")
        await add(b, "x", pid, epoch)
        await txn_produce(b, pid, epoch, 0, [b"a"])
        link = _Link(ib.address, ib.secret)
        r = await link.call(27, 1, markers(pid, epoch, True, 0, {"t": [0]}))
        assert codes(r) == {("t", 0): E.NONE}
        link.close()
        with pytest.raises(ConnectionError, match="authentication failed"):
            await _Link(ib.address, "not-the-secret").call(
                27, 1, markers(pid, epoch, True, 0, {"t": [0]}))
        # nothing but the SASL exchange before authentication: the connection is closed
        reader, writer = await asyncio.open_connection(*ib.address)
        bare = _Link(ib.address, ib.secret)
        bare._reader, bare._writer = reader, writer
        with pytest.raises(asyncio.IncompleteReadError):
            await bare._call(27, 1, markers(pid, epoch, True, 0, {"t": [0]}))
        writer.close()
    finally:
        await ib.stop()


def test_the_scram_client_matches_the_servers_exchange():
    users = SaslUsers({INTERNAL_USER: "s3cret"}, ("SCRAM-SHA-256",))
    client = ScramClient(INTERNAL_USER, "s3cret")
    server = users.start("SCRAM-SHA-256")
    first, _ = server.step(client.first())
    final, user = server.step(client.final(first))
    assert user == INTERNAL_USER
    client.verify(final)
    with pytest.raises(ConnectionError):
        client.verify(b"v=" + b"A" * 44)


async def test_an_administrators_abort_passes_the_coordinator_epoch_not_an_older_producer(
        broker):
    b = broker
    txn = b.extensions["txn"]
    _, pid, epoch = await init(b, "x")
    await add(b, "x", pid, epoch)
    await txn_produce(b, pid, epoch, 0, [b"a"])
    r = await call(b, write_txn_markers, markers(pid, epoch, True, 7, {"t": [0]}), 1)
    assert codes(r) == {("t", 0): E.NONE}
    await txn.add_partitions("x", pid, epoch, [("t", 0)], E.INVALID_PRODUCER_EPOCH)
    await txn_produce(b, pid, epoch, 1, [b"b"])
    await b.producers.state("t", 0)  # (what Produce keeps: the producer's epoch here)
    r = await call(b, write_txn_markers, markers(pid, epoch - 1, False, -1, {"t": [0]}), 1)
    assert codes(r) == {("t", 0): E.INVALID_PRODUCER_EPOCH}, "an older producer epoch"
    r = await call(b, write_txn_markers, markers(pid, epoch, False, -1, {"t": [0]}), 1)
    assert codes(r) == {("t", 0): E.NONE}, "coordinator epoch -1: an administrator's abort"
    assert txn.last_stable("t", 0, await hw(b)) == await hw(b)
