"""ElectLeaders (ALTER on the cluster; kafka-leader-election.sh, an admin client's
elect_leaders). Preferred election: a partition whose replica list (set by a
reassignment: broker/reassign.py) starts with a live broker that does not lead it moves
to that broker; one led by it already is ELECTION_NOT_NEEDED, as Kafka answers. Unclean
election: a partition with a leader needs none; one without (its broker gone and not taken
over yet) gets ELIGIBLE_LEADERS_NOT_AVAILABLE (another broker takes it over within the
session timeout by itself)."""
from broker import acls
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages.elect_leaders_response import (
    ElectLeadersResponse,
    PartitionResult,
    ReplicaElectionResult,
)
from broker.topics import stream_name
from s2core.errors import S2Error

API_KEY = 43
VERSIONS = (0, 2)
PREFERRED, UNCLEAN = 0, 1


async def _elect(broker, topic, p: int, election: int) -> tuple[int, str | None]:
    try:
        leader = await broker.cluster.stream_leader(stream_name(topic.name, p))
    except S2Error:
        leader = None
    if election == UNCLEAN:
        if leader is None:
            return E.ELIGIBLE_LEADERS_NOT_AVAILABLE, "No broker serves the partition now."
        return E.ELECTION_NOT_NEEDED, "Leader election not needed for topic partition."
    preferred = (topic.replicas.get(p) or [leader])[0]
    if preferred is None:
        return E.PREFERRED_LEADER_NOT_AVAILABLE, "No broker serves the partition now."
    if leader == preferred:
        return E.ELECTION_NOT_NEEDED, "Leader election not needed for topic partition."
    if broker.reassigner.check([preferred]) is not None:
        return E.PREFERRED_LEADER_NOT_AVAILABLE, \
            f"Failed to elect leader: broker {preferred} is not live."
    code, msg = await broker.reassigner.move_via_leader(topic.name, p, topic.replicas[p],
                                                        leader)
    return (E.NONE, None) if code == E.NONE else (E.PREFERRED_LEADER_NOT_AVAILABLE, msg)


async def handle(broker, conn, header, request):
    version = header.request_api_version
    election = request.election_type if version >= 1 else PREFERRED
    if not broker.allowed(conn, acls.ALTER):
        return ElectLeadersResponse(throttle_time_ms=0,
                                    error_code=E.CLUSTER_AUTHORIZATION_FAILED,
                                    replica_election_results=[])
    if election not in (PREFERRED, UNCLEAN):
        return ElectLeadersResponse(throttle_time_ms=0, error_code=E.INVALID_REQUEST,
                                    replica_election_results=[])
    wanted = request.topic_partitions
    if wanted is None:  # every partition
        asked = [(t.name, list(range(t.partitions)))
                 for _, t in sorted(broker.topics.topics.items())]
    else:
        asked = [(t.topic, list(t.partitions)) for t in wanted]
    results = []
    for name, parts in asked:
        topic = broker.topics.get(name)
        out = []
        for p in parts:
            if topic is None or not 0 <= p < topic.partitions:
                code, msg = E.UNKNOWN_TOPIC_OR_PARTITION, \
                    "This server does not host this topic-partition."
            else:
                code, msg = await _elect(broker, topic, p, election)
            out.append(PartitionResult(partition_id=p, error_code=code, error_message=msg))
        results.append(ReplicaElectionResult(topic=name, partition_result=out))
    return ElectLeadersResponse(throttle_time_ms=0, error_code=E.NONE,
                                replica_election_results=results)
