"""WriteTxnMarkers: a transaction coordinator's COMMIT or ABORT markers for the partitions
(and the groups' journal partitions, as topic `__consumer_offsets`) this broker serves
(CLUSTER_ACTION on the cluster; brokers send it over their internal listener:
broker/interbroker.py)."""
from broker import acls
from broker.groups.journal import PARTITIONS
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.write_txn_markers_response import (
    WritableTxnMarkerPartitionResult,
    WritableTxnMarkerResult,
    WritableTxnMarkerTopicResult,
    WriteTxnMarkersResponse,
)
from broker.transactions import GROUPS_TOPIC

API_KEY = 27
VERSIONS = (1, 2)  # (v0 left Kafka in 4.0; v2's transaction version is 1 here)


async def handle(broker, conn, header, request):
    allowed = broker.allowed(conn, acls.CLUSTER_ACTION)
    txn = broker.extensions["txn"]
    out = []
    for m in request.markers:
        topics = []
        for t in m.topics:
            parts = []
            for p in t.partition_indexes:
                if not allowed:
                    code = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
                elif getattr(m, "transaction_version", 0) > 1:
                    code = ErrorCode.UNSUPPORTED_VERSION
                elif t.name == GROUPS_TOPIC:
                    code = await _groups(broker, txn, p, m)
                else:
                    code = await txn.marker_code(txn.write_marker(
                        t.name, p, m.producer_id, m.producer_epoch, m.transaction_result,
                        m.coordinator_epoch))
                parts.append(WritableTxnMarkerPartitionResult(partition_index=p,
                                                              error_code=code))
            topics.append(WritableTxnMarkerTopicResult(name=t.name, partitions=parts))
        out.append(WritableTxnMarkerResult(producer_id=m.producer_id, topics=topics))
    return WriteTxnMarkersResponse(markers=out)


async def _groups(broker, txn, index: int, m) -> int:
    groups = broker.extensions["groups"]
    if not 0 <= index < PARTITIONS:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if not groups.journal.parts[index].local:
        return ErrorCode.NOT_COORDINATOR
    return await txn.marker_code(txn.groups_marker(index, m.producer_id,
                                                   m.transaction_result))
