"""AlterPartitionReassignments: move partitions to other brokers (ALTER on the cluster;
kafka-reassign-partitions.sh). The first broker of a partition's new replica list becomes
its leader; the move is done when the answer comes (broker/reassign.py). A partition led
by another broker is moved by that broker, to which the request is passed on."""
from broker import acls
from broker.groups.journal import PARTITIONS
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages.alter_partition_reassignments_response import (
    AlterPartitionReassignmentsResponse,
    ReassignablePartitionResponse,
    ReassignableTopicResponse,
)
from broker.topics import stream_name
from broker.transactions import GROUPS_TOPIC
from s2core.errors import S2Error

API_KEY = 45
VERSIONS = (0, 1)


def _reply(results: dict, code: int = E.NONE, msg: str | None = None):
    topics: dict[str, list] = {}
    for (t, p), (c, m) in results.items():
        topics.setdefault(t, []).append(ReassignablePartitionResponse(
            partition_index=p, error_code=c, error_message=m))
    return AlterPartitionReassignmentsResponse(
        throttle_time_ms=0, error_code=code, error_message=msg,
        responses=[ReassignableTopicResponse(name=t, partitions=ps)
                   for t, ps in topics.items()])


async def handle(broker, conn, header, request):
    results: dict[tuple[str, int], tuple[int, str | None]] = {}
    if not broker.allowed(conn, acls.ALTER):
        return _reply({}, E.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
    allow_rf_change = header.request_api_version < 1 or request.allow_replication_factor_change
    cluster, mover = broker.cluster, broker.reassigner
    ongoing = await mover.ongoing()
    forward: dict[int, list[tuple[str, int, list[int]]]] = {}
    local = []
    for t in request.topics:
        topic = broker.topics.get(t.name)
        if t.name == GROUPS_TOPIC and getattr(conn, "internal", False):
            for rp in t.partitions:  # (a balancing move of the group journal: reassign.py)
                results[(t.name, rp.partition_index)] = \
                    await mover.move(t.name, rp.partition_index, list(rp.replicas or [])) \
                    if rp.replicas and 0 <= rp.partition_index < PARTITIONS else \
                    (E.INVALID_REPLICA_ASSIGNMENT, "A journal partition and one broker.")
            continue
        for rp in t.partitions:
            key = (t.name, rp.partition_index)
            if topic is None or not 0 <= rp.partition_index < topic.partitions:
                results[key] = (E.UNKNOWN_TOPIC_OR_PARTITION,
                                "The topic or partition does not exist.")
                continue
            if rp.replicas is None:  # a cancellation: moves finish in moments, unstoppable
                results[key] = (E.NO_REASSIGNMENT_IN_PROGRESS,
                                "No reassignment is in progress for this partition.") \
                    if key not in ongoing else (E.INVALID_REPLICA_ASSIGNMENT,
                                                "A move in progress cannot be cancelled.")
                continue
            replicas = list(rp.replicas)
            refused = mover.check(replicas)
            try:
                leader = await cluster.stream_leader(stream_name(t.name, rp.partition_index))
            except S2Error:
                leader = None
            current = topic.replicas.get(rp.partition_index) or \
                ([leader] if leader is not None else [])
            if refused is None and not allow_rf_change and len(replicas) != len(current):
                refused = (E.INVALID_REPLICATION_FACTOR,
                           "The replication factor would change.")
            if refused is not None:
                results[key] = refused
            elif leader is None:
                results[key] = (E.LEADER_NOT_AVAILABLE, "The partition has no leader now.")
            elif leader == cluster.node_id:
                local.append((t.name, rp.partition_index, replicas))
            elif getattr(conn, "internal", False):  # (passed on already: no ping-pong)
                results[key] = (E.NOT_LEADER_OR_FOLLOWER, "The leader moved meanwhile.")
            else:
                forward.setdefault(leader, []).append((t.name, rp.partition_index, replicas))
    for topic, p, replicas in local:
        if replicas[0] == cluster.node_id:  # already its leader: the list is recorded
            if broker.topics.get(topic).replicas.get(p, [cluster.node_id]) != replicas:
                await broker.topics.set_replicas(topic, p, replicas)
            results[(topic, p)] = (E.NONE, None)
        else:
            results[(topic, p)] = await mover.move(topic, p, replicas)
    for node, parts in forward.items():  # (each passed on to its partition's leader)
        for topic, p, replicas in parts:
            results[(topic, p)] = await mover.move_via_leader(topic, p, replicas, node)
    return _reply(results)
