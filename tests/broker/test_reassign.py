"""AlterPartitionReassignments and ListPartitionReassignments through the codec on one
broker (compat_tests/test_cluster_reassign.py moves partitions between processes): Kafka's
refusals, a no-op move to the leader itself, and a move a stop left half done finished by
`Reassigner.resume`."""
from __future__ import annotations

import asyncio
import json

import pytest
from test_transactions import BASIN, call

from broker.groups.classic import ClassicMember
from broker.groups.journal import partition_of
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages.alter_partition_reassignments_request import (
    AlterPartitionReassignmentsRequest,
    ReassignablePartition,
    ReassignableTopic,
)
from broker.protocol.messages.describe_topic_partitions_request import (
    Cursor,
    DescribeTopicPartitionsRequest,
    TopicRequest,
)
from broker.protocol.messages.elect_leaders_request import ElectLeadersRequest, TopicPartitions
from broker.protocol.messages.list_partition_reassignments_request import (
    ListPartitionReassignmentsRequest,
)
from broker.reassign import PREFIX
from broker.services import (
    alter_partition_reassignments,
    describe_topic_partitions,
    elect_leaders,
    list_partition_reassignments,
)
from broker.topics import stream_name
from broker.transactions import GROUPS_TOPIC


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


async def elect(b, parts, election=0, version=2):
    r = await call(b, elect_leaders, ElectLeadersRequest(
        election_type=election, timeout_ms=1000,
        topic_partitions=None if parts is None else [
            TopicPartitions(topic=t, partitions=ps) for t, ps in parts.items()]), version)
    return r.error_code, {(t.topic, p.partition_id): p.error_code
                          for t in r.replica_election_results for p in t.partition_result}


async def test_elect_leaders(broker):
    b = broker
    assert await elect(b, {"t": [0, 1], "u": [0]}) == (E.NONE, {
        ("t", 0): E.ELECTION_NOT_NEEDED, ("t", 1): E.ELECTION_NOT_NEEDED,
        ("u", 0): E.UNKNOWN_TOPIC_OR_PARTITION})
    assert await elect(b, None, election=1) == (E.NONE, {
        ("t", 0): E.ELECTION_NOT_NEEDED, ("t", 1): E.ELECTION_NOT_NEEDED})
    await b.topics.set_replicas("t", 1, [4, 0])  # a preferred broker that is not live
    _, res = await elect(b, {"t": [1]})
    assert res == {("t", 1): E.PREFERRED_LEADER_NOT_AVAILABLE}
    assert (await elect(b, {"t": [0]}, election=5))[0] == E.INVALID_REQUEST


async def test_describe_topic_partitions_refuses_a_cursor_outside_the_topics(broker):
    b = broker
    r = await call(b, describe_topic_partitions, DescribeTopicPartitionsRequest(
        topics=[TopicRequest(name="t")], response_partition_limit=1,
        cursor=Cursor(topic_name="zz", partition_index=0)), 0)
    assert [(t.name, t.error_code) for t in r.topics] == [("zz", E.INVALID_REQUEST)]
    r = await call(b, describe_topic_partitions, DescribeTopicPartitionsRequest(
        topics=[], response_partition_limit=1, cursor=None), 0)
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in r.topics] == \
        [("t", [0])]
    assert (r.next_cursor.topic_name, r.next_cursor.partition_index) == ("t", 1)


async def test_a_journal_move_left_half_done_is_finished_and_its_groups_let_go(broker):
    b = broker
    groups = b.extensions["groups"]
    index = partition_of("grp")
    await groups.commit("grp", [["t", 0, 5, -1, "", 0]])
    assert groups.offsets.get("grp", "t", 0).offset == 5
    waiting = groups.classic("grp", True)  # a member waiting in a rebalance there
    member = ClassicMember("m-1", None, "c", "h", 10000, 10000, "consumer", [])
    member.join_fut = asyncio.get_running_loop().create_future()
    waiting.members[member.member_id] = member
    part = groups.journal.parts[index]
    await b.store.metadata.put(f"{PREFIX}{GROUPS_TOPIC}/{index}",
                               json.dumps({"replicas": [1], "from": 0}).encode(), 0)
    await b.store.seal_stream(BASIN, part.stream)  # (stopped after the seal)
    await b.reassigner.resume()
    h = await b.store._handle(BASIN, part.stream)
    assert h.chain[-1]["channel"] == "ch1"
    assert groups.not_here("grp") and groups.offsets.get("grp", "t", 0) is None
    assert member.join_fut.result().error == E.NOT_COORDINATOR, "told to look again"
    assert await b.reassigner.ongoing() == {}
    await groups.follow_moves()  # nothing changes: the stream is another broker's now
    assert groups.not_here("grp")
