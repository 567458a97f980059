"""Group APIs on raw sockets, encoded with the repo's codec: Kafka's error codes for bad
input, and the group's state untouched by refused requests."""
from __future__ import annotations

import socket
import struct
import time
import uuid

import pytest

from broker.protocol.errors import ErrorCode as E
from broker.protocol.frames import RequestHeader, decode_response, encode_request
from broker.protocol.messages.consumer_group_heartbeat_request import (
    ConsumerGroupHeartbeatRequest,
)
from broker.protocol.messages.create_topics_request import CreatableTopic, CreateTopicsRequest
from broker.protocol.messages.delete_groups_request import DeleteGroupsRequest
from broker.protocol.messages.delete_topics_request import DeleteTopicsRequest
from broker.protocol.messages.describe_groups_request import DescribeGroupsRequest
from broker.protocol.messages.find_coordinator_request import FindCoordinatorRequest
from broker.protocol.messages.heartbeat_request import HeartbeatRequest
from broker.protocol.messages.join_group_request import JoinGroupRequest, JoinGroupRequestProtocol
from broker.protocol.messages.leave_group_request import LeaveGroupRequest, MemberIdentity
from broker.protocol.messages.list_groups_request import ListGroupsRequest
from broker.protocol.messages.offset_commit_request import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from broker.protocol.messages.offset_delete_request import (
    OffsetDeleteRequest,
    OffsetDeleteRequestPartition,
    OffsetDeleteRequestTopic,
)
from broker.protocol.messages.offset_fetch_request import (
    OffsetFetchRequest,
    OffsetFetchRequestGroup,
    OffsetFetchRequestTopic,
    OffsetFetchRequestTopics,
)
from broker.protocol.messages.sync_group_request import (
    SyncGroupRequest,
    SyncGroupRequestAssignment,
)

COMMIT, FETCH_OFFSETS, FIND, JOIN, HEARTBEAT, LEAVE, SYNC, DESCRIBE, LIST = 8, 9, 10, 11, 12, \
    13, 14, 15, 16
CREATE_TOPICS, DELETE_TOPICS, DELETE_GROUPS, OFFSET_DELETE, CG_HEARTBEAT = 19, 20, 42, 47, 68


class Wire:
    """A blocking Kafka connection speaking through the repo's codec (test client)."""

    def __init__(self, bootstrap: str, timeout: float = 15) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.corr = 0

    def close(self) -> None:
        self.sock.close()

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the broker")
            buf += chunk
        return bytes(buf)

    def send(self, api_key: int, version: int, body) -> int:
        self.corr += 1
        header = RequestHeader(api_key, version, self.corr, "groups-wire")
        self.sock.sendall(b"".join(bytes(p) for p in encode_request(header, body)))
        return self.corr

    def receive(self, api_key: int, version: int, corr: int):
        (size,) = struct.unpack(">i", self._read(4))
        rh, resp = decode_response(self._read(size), api_key, version)
        assert rh.correlation_id == corr
        return resp

    def call(self, api_key: int, version: int, body):
        return self.receive(api_key, version, self.send(api_key, version, body))


@pytest.fixture
def wire(broker):
    w = Wire(broker.bootstrap)
    yield w
    w.close()


def consumer_meta(*topics: str) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def join(w, group, member_id="", *, version=5, instance=None, ptype="consumer",
         protocols=(("range", b""),), session=6000):
    return w.call(JOIN, version, JoinGroupRequest(
        group_id=group, session_timeout_ms=session, rebalance_timeout_ms=10000,
        member_id=member_id, group_instance_id=instance, protocol_type=ptype,
        protocols=[JoinGroupRequestProtocol(name=n, metadata=m) for n, m in protocols]))


def one_member_group(w, group, topic=None, instance=None):
    """A Stable group with one member (joined and synced); returns (member_id, generation)."""
    meta = consumer_meta(topic) if topic else b""
    r = join(w, group, instance=instance, protocols=(("range", meta),))
    if r.error_code == E.MEMBER_ID_REQUIRED:
        r = join(w, group, r.member_id, instance=instance, protocols=(("range", meta),))
    assert r.error_code == 0 and r.leader == r.member_id
    s = w.call(SYNC, 3, SyncGroupRequest(
        group_id=group, generation_id=r.generation_id, member_id=r.member_id,
        group_instance_id=instance,
        assignments=[SyncGroupRequestAssignment(member_id=r.member_id, assignment=b"A")]))
    assert s.error_code == 0 and s.assignment == b"A"
    return r.member_id, r.generation_id


def describe(w, group):
    return w.call(DESCRIBE, 5, DescribeGroupsRequest(groups=[group])).groups[0]


def commit(w, group, topic, offset, *, gen=-1, member="", metadata="", partition=0,
           version=8):
    r = w.call(COMMIT, version, OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=gen, member_id=member,
        topics=[OffsetCommitRequestTopic(name=topic, partitions=[OffsetCommitRequestPartition(
            partition_index=partition, committed_offset=offset, committed_metadata=metadata)])]))
    return r.topics[0].partitions[0].error_code


def fetch(w, group, topic, partition=0):
    r = w.call(FETCH_OFFSETS, 7, OffsetFetchRequest(group_id=group, topics=[
        OffsetFetchRequestTopic(name=topic, partition_indexes=[partition])]))
    p = r.topics[0].partitions[0]
    return p.committed_offset, p.metadata, p.error_code


def create_topic(w, name, partitions=1):
    r = w.call(CREATE_TOPICS, 5, CreateTopicsRequest(
        topics=[CreatableTopic(name=name, num_partitions=partitions, replication_factor=1)],
        timeout_ms=10000))
    assert r.topics[0].error_code == 0


def gid() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------ FindCoordinator

@pytest.mark.parametrize("version", range(4))
def test_find_coordinator_single_key(broker, wire, version):
    r = wire.call(FIND, version, FindCoordinatorRequest(key="g", key_type=0))
    assert r.error_code == 0 and f"{r.host}:{r.port}" == broker.bootstrap


@pytest.mark.parametrize("version", [4, 5, 6])
def test_find_coordinator_batched_keys(broker, wire, version):
    r = wire.call(FIND, version, FindCoordinatorRequest(key_type=0,
                                                        coordinator_keys=["a", "b", "c"]))
    assert [c.key for c in r.coordinators] == ["a", "b", "c"]
    assert all(c.error_code == 0 and f"{c.host}:{c.port}" == broker.bootstrap
               for c in r.coordinators)


def test_find_transaction_coordinator_and_bad_key_types(wire):
    r = wire.call(FIND, 3, FindCoordinatorRequest(key="tx", key_type=1))
    assert r.error_code == 0 and r.node_id >= 0, "this broker coordinates transactions"
    r = wire.call(FIND, 4, FindCoordinatorRequest(key_type=1, coordinator_keys=["tx"]))
    assert r.coordinators[0].error_code == 0
    r = wire.call(FIND, 4, FindCoordinatorRequest(key_type=7, coordinator_keys=["tx"]))
    assert r.coordinators[0].error_code == E.INVALID_REQUEST


# ------------------------------------------------------------------ JoinGroup & co

def test_member_id_required_from_v4_and_not_before(wire):
    g = gid()
    r = join(wire, g, version=4)
    assert r.error_code == E.MEMBER_ID_REQUIRED and r.member_id
    r2 = join(wire, g, r.member_id, version=4)
    assert r2.error_code == 0 and r2.member_id == r.member_id and r2.generation_id == 1
    g2 = gid()
    r = join(wire, g2, version=3)
    assert r.error_code == 0 and r.member_id and r.generation_id == 1


@pytest.mark.parametrize("version", range(10))
def test_join_group_every_version(wire, version):
    g = gid()
    r = join(wire, g, version=version)
    if r.error_code == E.MEMBER_ID_REQUIRED:
        r = join(wire, g, r.member_id, version=version)
    assert r.error_code == 0 and r.leader == r.member_id and len(r.members) == 1


def test_unknown_member_on_new_group(wire):
    assert join(wire, gid(), "nobody").error_code == E.UNKNOWN_MEMBER_ID


def test_session_timeout_out_of_range(wire):
    assert join(wire, gid(), session=100).error_code == E.INVALID_SESSION_TIMEOUT


def test_mismatched_protocol_type_and_protocols_leave_group_untouched(wire):
    g = gid()
    mid, gen = one_member_group(wire, g)
    before = describe(wire, g)
    assert join(wire, g, ptype="connect").error_code == E.INCONSISTENT_GROUP_PROTOCOL
    assert join(wire, g, protocols=(("roundrobin", b""),)).error_code == \
        E.INCONSISTENT_GROUP_PROTOCOL
    after = describe(wire, g)
    assert (after.group_state, [m.member_id for m in after.members]) == \
        ("Stable", [mid]) == (before.group_state, [m.member_id for m in before.members])
    assert wire.call(HEARTBEAT, 3, HeartbeatRequest(group_id=g, generation_id=gen,
                                                    member_id=mid)).error_code == 0


def test_heartbeat_errors(wire):
    g = gid()
    assert wire.call(HEARTBEAT, 3, HeartbeatRequest(group_id=g, generation_id=1,
                                                    member_id="x")).error_code == \
        E.UNKNOWN_MEMBER_ID
    mid, gen = one_member_group(wire, g)
    assert wire.call(HEARTBEAT, 3, HeartbeatRequest(group_id=g, generation_id=gen,
                                                    member_id="x")).error_code == \
        E.UNKNOWN_MEMBER_ID
    assert wire.call(HEARTBEAT, 3, HeartbeatRequest(group_id=g, generation_id=gen + 5,
                                                    member_id=mid)).error_code == \
        E.ILLEGAL_GENERATION
    assert wire.call(HEARTBEAT, 0, HeartbeatRequest(group_id=g, generation_id=gen,
                                                    member_id=mid)).error_code == 0
    assert describe(wire, g).group_state == "Stable"


def test_sync_group_errors(wire):
    g = gid()
    mid, gen = one_member_group(wire, g)
    r = wire.call(SYNC, 3, SyncGroupRequest(group_id=g, generation_id=gen - 1, member_id=mid))
    assert r.error_code == E.ILLEGAL_GENERATION
    r = wire.call(SYNC, 3, SyncGroupRequest(group_id=g, generation_id=gen, member_id="zz"))
    assert r.error_code == E.UNKNOWN_MEMBER_ID
    r = wire.call(SYNC, 5, SyncGroupRequest(group_id=g, generation_id=gen, member_id=mid,
                                            protocol_type="connect", protocol_name="range"))
    assert r.error_code == E.INCONSISTENT_GROUP_PROTOCOL
    r = wire.call(SYNC, 5, SyncGroupRequest(group_id=g, generation_id=gen, member_id=mid,
                                            protocol_type="consumer", protocol_name="range"))
    assert r.error_code == 0 and r.assignment == b"A"   # still the stored assignment


def test_static_member_duplicate_is_fenced(wire):
    g = gid()
    old, gen = one_member_group(wire, g, instance="inst-1")
    new = join(wire, g, instance="inst-1")  # same instance id, a new process
    assert new.error_code == 0 and new.member_id != old and new.generation_id == gen
    r = wire.call(HEARTBEAT, 3, HeartbeatRequest(group_id=g, generation_id=gen,
                                                 member_id=old, group_instance_id="inst-1"))
    assert r.error_code == E.FENCED_INSTANCE_ID
    r = wire.call(HEARTBEAT, 3, HeartbeatRequest(group_id=g, generation_id=gen,
                                                 member_id=new.member_id,
                                                 group_instance_id="inst-1"))
    assert r.error_code == 0
    s = wire.call(SYNC, 3, SyncGroupRequest(group_id=g, generation_id=gen,
                                            member_id=new.member_id,
                                            group_instance_id="inst-1"))
    assert s.error_code == 0 and s.assignment == b"A"  # kept, no rebalance


def test_leave_group_batch_and_unknown_members(wire):
    g = gid()
    mid, _gen = one_member_group(wire, g)
    r = wire.call(LEAVE, 3, LeaveGroupRequest(group_id=g, members=[
        MemberIdentity(member_id="ghost"), MemberIdentity(member_id=mid)]))
    assert r.error_code == 0
    assert [(m.member_id, m.error_code) for m in r.members] == \
        [("ghost", E.UNKNOWN_MEMBER_ID), (mid, 0)]
    assert describe(wire, g).group_state == "Empty"
    r = wire.call(LEAVE, 1, LeaveGroupRequest(group_id=gid(), member_id="x"))
    assert r.error_code == E.UNKNOWN_MEMBER_ID


def test_rebalance_waits_for_known_members_then_completes_at_once(wire, broker):
    g = gid()
    a, gen = one_member_group(wire, g)
    w2 = Wire(broker.bootstrap)
    try:
        corr = w2.send(JOIN, 3, JoinGroupRequest(  # v3: no MEMBER_ID_REQUIRED round
            group_id=g, session_timeout_ms=6000, rebalance_timeout_ms=10000, member_id="",
            protocol_type="consumer", protocols=[JoinGroupRequestProtocol(name="range")]))
        deadline = time.monotonic() + 10
        while describe(wire, g).group_state != "PreparingRebalance":
            assert time.monotonic() < deadline, "the join did not start a rebalance"
            time.sleep(0.02)
        r = wire.call(HEARTBEAT, 3, HeartbeatRequest(group_id=g, generation_id=gen,
                                                     member_id=a))
        assert r.error_code == E.REBALANCE_IN_PROGRESS
        s = wire.call(SYNC, 3, SyncGroupRequest(group_id=g, generation_id=gen, member_id=a))
        assert s.error_code == E.REBALANCE_IN_PROGRESS
        ra = join(wire, g, a)  # the last known member rejoins: the phase ends now
        rb = w2.receive(JOIN, 3, corr)
        assert ra.error_code == rb.error_code == 0
        assert ra.generation_id == rb.generation_id == gen + 1
        assert ra.leader == a and len(ra.members) == 2 and rb.members == []
        hb = wire.call(HEARTBEAT, 3, HeartbeatRequest(group_id=g, generation_id=gen,
                                                      member_id=a))
        assert hb.error_code == E.ILLEGAL_GENERATION
        assert describe(wire, g).group_state == "CompletingRebalance"
        assert commit(wire, g, "any", 1, gen=gen + 1, member=a) == E.REBALANCE_IN_PROGRESS
    finally:
        w2.close()


# ------------------------------------------------------------------ offsets

def test_simple_commit_round_trips_metadata(wire, topic_name):
    create_topic(wire, topic_name)
    g = gid()
    assert commit(wire, g, topic_name, 42, metadata="meta-ü") == 0
    assert fetch(wire, g, topic_name) == (42, "meta-ü", 0)


@pytest.mark.parametrize("version", range(2, 10))
def test_commit_and_fetch_every_version(wire, topic_name, version):
    create_topic(wire, topic_name)
    g = gid()
    assert commit(wire, g, topic_name, 5 + version, metadata="m", version=version) == 0
    assert fetch(wire, g, topic_name)[:2] == (5 + version, "m")


def test_oversized_metadata_is_refused_and_offset_kept(wire, topic_name):
    create_topic(wire, topic_name)
    g = gid()
    assert commit(wire, g, topic_name, 3, metadata="ok") == 0
    assert commit(wire, g, topic_name, 9, metadata="x" * 4097) == E.OFFSET_METADATA_TOO_LARGE
    assert fetch(wire, g, topic_name)[:2] == (3, "ok")


def test_commit_for_deleted_topic(wire, topic_name):
    create_topic(wire, topic_name)
    g = gid()
    assert commit(wire, g, topic_name, 8) == 0
    r = wire.call(DELETE_TOPICS, 4, DeleteTopicsRequest(topic_names=[topic_name],
                                                        timeout_ms=10000))
    assert r.responses[0].error_code == 0
    assert commit(wire, gid(), topic_name, 1) == E.UNKNOWN_TOPIC_OR_PARTITION
    assert commit(wire, gid(), topic_name + "-never", 1) == E.UNKNOWN_TOPIC_OR_PARTITION
    assert fetch(wire, g, topic_name)[0] == -1
    create_topic(wire, topic_name)  # recreated: the old offsets do not come back
    assert fetch(wire, g, topic_name)[0] == -1
    r = wire.call(FETCH_OFFSETS, 7, OffsetFetchRequest(group_id=g, topics=None))
    assert r.topics == []


def test_commit_generation_checks(wire, topic_name):
    create_topic(wire, topic_name)
    g = gid()
    mid, gen = one_member_group(wire, g, topic_name)
    assert commit(wire, g, topic_name, 1, gen=gen + 1, member=mid) == E.ILLEGAL_GENERATION
    assert commit(wire, g, topic_name, 1, gen=gen, member="who") == E.UNKNOWN_MEMBER_ID
    assert commit(wire, g, topic_name, 1) == E.UNKNOWN_MEMBER_ID  # simple commit, live group
    assert fetch(wire, g, topic_name)[0] == -1
    assert commit(wire, g, topic_name, 7, gen=gen, member=mid, metadata="x") == 0
    assert fetch(wire, g, topic_name)[:2] == (7, "x")
    assert commit(wire, gid(), topic_name, 1, gen=3, member="m") == E.ILLEGAL_GENERATION


def test_offset_fetch_multi_group_and_all_topics(wire, topic_name):
    create_topic(wire, topic_name, 2)
    g1, g2 = gid(), gid()
    assert commit(wire, g1, topic_name, 11) == 0
    assert commit(wire, g2, topic_name, 22, partition=1) == 0
    r = wire.call(FETCH_OFFSETS, 8, OffsetFetchRequest(require_stable=True, groups=[
        OffsetFetchRequestGroup(group_id=g1, topics=None),
        OffsetFetchRequestGroup(group_id=g2, topics=[
            OffsetFetchRequestTopics(name=topic_name, partition_indexes=[0, 1])]),
        OffsetFetchRequestGroup(group_id=gid(), topics=None)]))
    a, b, c = r.groups
    assert [(t.name, [(p.partition_index, p.committed_offset) for p in t.partitions])
            for t in a.topics] == [(topic_name, [(0, 11)])]
    assert [(p.partition_index, p.committed_offset) for p in b.topics[0].partitions] == \
        [(0, -1), (1, 22)]
    assert c.error_code == 0 and c.topics == []


def test_offset_delete(wire, topic_name):
    create_topic(wire, topic_name)
    g = gid()
    r = wire.call(OFFSET_DELETE, 0, OffsetDeleteRequest(group_id=g, topics=[]))
    assert r.error_code == E.GROUP_ID_NOT_FOUND
    assert commit(wire, g, topic_name, 4) == 0
    mid, _gen = one_member_group(wire, g, topic_name)
    req = OffsetDeleteRequest(group_id=g, topics=[OffsetDeleteRequestTopic(
        name=topic_name, partitions=[OffsetDeleteRequestPartition(partition_index=0)])])
    r = wire.call(OFFSET_DELETE, 0, req)
    assert r.topics[0].partitions[0].error_code == E.GROUP_SUBSCRIBED_TO_TOPIC
    assert fetch(wire, g, topic_name)[0] == 4
    wire.call(LEAVE, 3, LeaveGroupRequest(group_id=g, members=[MemberIdentity(member_id=mid)]))
    r = wire.call(OFFSET_DELETE, 0, req)
    assert r.error_code == 0 and r.topics[0].partitions[0].error_code == 0
    assert fetch(wire, g, topic_name)[0] == -1


# ------------------------------------------------------------ list / describe / delete

def test_list_describe_delete_groups(wire, topic_name):
    create_topic(wire, topic_name)
    live, empty = gid(), gid()
    one_member_group(wire, live, topic_name)
    assert commit(wire, empty, topic_name, 1) == 0
    r = wire.call(LIST, 4, ListGroupsRequest(states_filter=["Stable"]))
    names = {g.group_id for g in r.groups}
    assert live in names and empty not in names
    r = wire.call(LIST, 5, ListGroupsRequest(states_filter=[], types_filter=["classic"]))
    listed = {g.group_id: (g.group_state, g.group_type) for g in r.groups}
    assert listed[live] == ("Stable", "classic") and listed[empty] == ("Empty", "classic")
    r = wire.call(LIST, 5, ListGroupsRequest(types_filter=["consumer"]))
    assert live not in {g.group_id for g in r.groups}
    d = describe(wire, live)
    assert d.group_state == "Stable" and d.protocol_type == "consumer" and \
        d.protocol_data == "range" and d.members[0].member_assignment == b"A"
    assert wire.call(DESCRIBE, 6, DescribeGroupsRequest(groups=["nope-" + live])).groups[0] \
        .error_code == E.GROUP_ID_NOT_FOUND
    r = wire.call(DELETE_GROUPS, 2, DeleteGroupsRequest(groups_names=[live, empty,
                                                                       "nope-" + live]))
    assert [(x.group_id, x.error_code) for x in r.results] == \
        [(live, E.NON_EMPTY_GROUP), (empty, 0), ("nope-" + live, E.GROUP_ID_NOT_FOUND)]
    assert fetch(wire, empty, topic_name)[0] == -1
    assert describe(wire, live).group_state == "Stable"


# ------------------------------------------------------------------ KIP-848

def test_consumer_group_heartbeat_errors(wire, topic_name):
    create_topic(wire, topic_name, 2)
    g = gid()
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-1", member_epoch=3))
    assert r.error_code == E.GROUP_ID_NOT_FOUND
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-1", member_epoch=0, subscribed_topic_names=[topic_name],
        server_assignor="nope"))
    assert r.error_code == E.UNSUPPORTED_ASSIGNOR
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-1", member_epoch=0, subscribed_topic_regex="(("))
    assert r.error_code == E.INVALID_REGULAR_EXPRESSION
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-1", member_epoch=0, subscribed_topic_names=[topic_name],
        rebalance_timeout_ms=10000, topic_partitions=[]))
    assert r.error_code == 0 and r.member_epoch == 1
    assert sorted(r.assignment.topic_partitions[0].partitions) == [0, 1]
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-1", member_epoch=7))
    assert r.error_code == E.FENCED_MEMBER_EPOCH
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-2", member_epoch=1))
    assert r.error_code == E.UNKNOWN_MEMBER_ID
    # a classic join to a live consumer group is refused; the group is unchanged
    assert join(wire, g).error_code == E.INCONSISTENT_GROUP_PROTOCOL
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-1", member_epoch=1))
    assert r.error_code == 0 and r.member_epoch == 1
    assert commit(wire, g, topic_name, 5, gen=0, member="m-1", version=9) == \
        E.STALE_MEMBER_EPOCH
    assert commit(wire, g, topic_name, 5, gen=2, member="m-1", version=9) == \
        E.FENCED_MEMBER_EPOCH
    assert commit(wire, g, topic_name, 5, gen=1, member="m-1", version=9) == 0
    r = wire.call(CG_HEARTBEAT, 0, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-1", member_epoch=-1))
    assert r.error_code == 0 and r.member_epoch == -1


def test_refused_first_requests_leave_no_group(wire):
    g1, g2 = gid(), gid()
    assert join(wire, g1, ptype="").error_code == E.INCONSISTENT_GROUP_PROTOCOL
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g2, member_id="m", member_epoch=0))  # no subscription
    assert r.error_code == E.INVALID_REQUEST
    listed = {g.group_id for g in wire.call(LIST, 5, ListGroupsRequest()).groups}
    assert g1 not in listed and g2 not in listed


def test_static_leave_by_instance_id_and_fenced_commit(wire, topic_name):
    create_topic(wire, topic_name)
    g = gid()
    _mid, gen = one_member_group(wire, g, topic_name, instance="inst-s")
    r = wire.call(COMMIT, 8, OffsetCommitRequest(
        group_id=g, generation_id_or_member_epoch=gen, member_id="someone-else",
        group_instance_id="inst-s", topics=[OffsetCommitRequestTopic(
            name=topic_name, partitions=[OffsetCommitRequestPartition(
                partition_index=0, committed_offset=3)])]))
    assert r.topics[0].partitions[0].error_code == E.FENCED_INSTANCE_ID
    r = wire.call(LEAVE, 4, LeaveGroupRequest(group_id=g, members=[
        MemberIdentity(member_id="wrong", group_instance_id="inst-s")]))
    assert r.members[0].error_code == E.FENCED_INSTANCE_ID
    assert describe(wire, g).group_state == "Stable"
    r = wire.call(LEAVE, 4, LeaveGroupRequest(group_id=g, members=[
        MemberIdentity(member_id="", group_instance_id="inst-s"),
        MemberIdentity(member_id="", group_instance_id="inst-unknown")]))
    assert [m.error_code for m in r.members] == [0, E.UNKNOWN_MEMBER_ID]
    assert describe(wire, g).group_state == "Empty"


def test_offset_fetch_member_epoch_checks_for_consumer_groups(wire, topic_name):
    create_topic(wire, topic_name)
    g = gid()
    r = wire.call(CG_HEARTBEAT, 1, ConsumerGroupHeartbeatRequest(
        group_id=g, member_id="m-1", member_epoch=0, subscribed_topic_names=[topic_name],
        topic_partitions=[]))
    assert r.error_code == 0 and r.member_epoch == 1

    def fetch_group(member_id, epoch):
        return wire.call(FETCH_OFFSETS, 9, OffsetFetchRequest(groups=[OffsetFetchRequestGroup(
            group_id=g, member_id=member_id, member_epoch=epoch, topics=None)])).groups[0]

    assert fetch_group("m-1", 0).error_code == E.STALE_MEMBER_EPOCH
    assert fetch_group("m-9", 1).error_code == E.UNKNOWN_MEMBER_ID
    assert fetch_group("m-1", 1).error_code == 0
    assert fetch_group(None, -1).error_code == 0   # an admin client
