"""ListPartitionReassignments: the partition moves not finished yet (DESCRIBE on the
cluster; broker/reassign.py). A move takes moments, so the list is usually empty."""
from broker import acls
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages.list_partition_reassignments_response import (
    ListPartitionReassignmentsResponse,
    OngoingPartitionReassignment,
    OngoingTopicReassignment,
)

API_KEY = 46
VERSIONS = (0, 0)


async def handle(broker, conn, header, request):
    if not broker.allowed(conn, acls.DESCRIBE):
        return ListPartitionReassignmentsResponse(
            throttle_time_ms=0, error_code=E.CLUSTER_AUTHORIZATION_FAILED,
            error_message="Cluster authorization failed.")
    wanted = None if request.topics is None else {
        (t.name, p) for t in request.topics for p in t.partition_indexes}
    topics: dict[str, list] = {}
    for (topic, p), d in sorted((await broker.reassigner.ongoing()).items()):
        if wanted is not None and (topic, p) not in wanted:
            continue
        replicas, old = d["replicas"], d["from"]
        topics.setdefault(topic, []).append(OngoingPartitionReassignment(
            partition_index=p, replicas=replicas,
            adding_replicas=[r for r in replicas if r != old],
            removing_replicas=[] if old in replicas else [old]))
    return ListPartitionReassignmentsResponse(
        throttle_time_ms=0, error_code=E.NONE, error_message=None,
        topics=[OngoingTopicReassignment(name=t, partitions=ps) for t, ps in topics.items()])
