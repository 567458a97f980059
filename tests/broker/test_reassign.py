"""AlterPartitionReassignments and ListPartitionReassignments through the codec on one
broker (compat_tests/test_cluster_reassign.py moves partitions between processes): Kafka's
refusals, a no-op move to the leader itself, and a move a stop left half done finished by
`Reassigner.resume`."""
from __future__ import annotations

import json

import pytest
from test_transactions import BASIN, call

from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages.alter_partition_reassignments_request import (
    AlterPartitionReassignmentsRequest,
    ReassignablePartition,
    ReassignableTopic,
)
from broker.protocol.messages.list_partition_reassignments_request import (
    ListPartitionReassignmentsRequest,
)
from broker.reassign import PREFIX
from broker.services import alter_partition_reassignments, list_partition_reassignments
from broker.topics import stream_name


@pytest.fixture
async def broker(memory_broker):
    b = await memory_broker(basin=BASIN)
    await b.topics.create("t", 2, {})
    return b


async def alter(b, parts, version=0, allow_rf=True):
    r = await call(b, alter_partition_reassignments, AlterPartitionReassignmentsRequest(
        timeout_ms=1000, allow_replication_factor_change=allow_rf,
        topics=[ReassignableTopic(name=t, partitions=[
            ReassignablePartition(partition_index=p, replicas=r)])
            for (t, p), r in parts.items()]), version)
    return r.error_code, {(t.name, p.partition_index): p.error_code
                          for t in r.responses for p in t.partitions}


async def test_refusals_and_a_move_to_the_leader_itself(broker):
    b = broker
    code, res = await alter(b, {("t", 0): [0], ("t", 1): [3], ("u", 0): [0], ("t", 5): [0]})
    assert code == E.NONE
    assert res == {("t", 0): E.NONE, ("t", 1): E.INVALID_REPLICA_ASSIGNMENT,
                   ("u", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
                   ("t", 5): E.UNKNOWN_TOPIC_OR_PARTITION}
    _, res = await alter(b, {("t", 0): [0, 0]})
    assert res == {("t", 0): E.INVALID_REPLICA_ASSIGNMENT}
    _, res = await alter(b, {("t", 0): None})
    assert res == {("t", 0): E.NO_REASSIGNMENT_IN_PROGRESS}
    r = await call(b, list_partition_reassignments,
                   ListPartitionReassignmentsRequest(timeout_ms=1000, topics=None), 0)
    assert (r.error_code, r.topics) == (E.NONE, [])


async def test_reassignment_needs_alter_on_the_cluster(memory_broker):
    b = await memory_broker(basin=BASIN, authorizer=True)
    await b.topics.create("t", 1, {})
    code, res = await alter(b, {("t", 0): [0]})
    assert (code, res) == (E.CLUSTER_AUTHORIZATION_FAILED, {})
    r = await call(b, list_partition_reassignments,
                   ListPartitionReassignmentsRequest(timeout_ms=1000, topics=None), 0)
    assert r.error_code == E.CLUSTER_AUTHORIZATION_FAILED


async def test_a_move_left_half_done_is_finished_and_listed_until_then(broker):
    b = broker
    md = b.store.metadata
    await md.put(f"{PREFIX}t/1", json.dumps({"replicas": [1], "from": 0}).encode(), 0)
    await b.store.seal_stream(BASIN, stream_name("t", 1))  # (stopped after the seal)
    r = await call(b, list_partition_reassignments, ListPartitionReassignmentsRequest(
        timeout_ms=1000, topics=None), 0)
    [t] = r.topics
    [p] = t.partitions
    assert (t.name, p.partition_index, p.replicas, p.adding_replicas,
            p.removing_replicas) == ("t", 1, [1], [1], [0])
    await b.reassigner.resume()
    h = await b.store._handle(BASIN, stream_name("t", 1))
    assert h.chain[-1]["channel"] == "ch1"
    assert await md.get(f"{PREFIX}t/1") is None
    assert await b.reassigner.ongoing() == {}
