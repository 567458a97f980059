"""DescribeCluster: the live brokers (this one alone, unless in a cluster:
broker/cluster.py); the lowest node id stands for the controller."""
from __future__ import annotations

from broker.acls import CLUSTER, DESCRIBE, SUPPORTED
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_cluster_response import (
    DescribeClusterBroker,
    DescribeClusterResponse,
)
from broker.services._common import NO_AUTH_OPS

API_KEY = 60
VERSIONS = (0, 2)
BROKERS, CONTROLLERS = 1, 2  # endpoint types (v1+)
# With no authorizer Kafka grants every operation the CLUSTER resource supports: CREATE,
# ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
CLUSTER_OPS = sum(1 << op for op in SUPPORTED[CLUSTER])


async def handle(broker, conn, header, request):
    endpoint_type = request.endpoint_type if header.request_api_version >= 1 else BROKERS
    if not broker.allowed(conn, DESCRIBE):
        return DescribeClusterResponse(
            throttle_time_ms=0, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
            endpoint_type=endpoint_type, error_message="Cluster authorization failed.",
            cluster_id=broker.cluster_id, controller_id=-1, brokers=[],
            cluster_authorized_operations=NO_AUTH_OPS)
    if endpoint_type != BROKERS:
        code = ErrorCode.UNSUPPORTED_ENDPOINT_TYPE if endpoint_type == CONTROLLERS \
            else ErrorCode.INVALID_REQUEST
        return DescribeClusterResponse(
            throttle_time_ms=0, error_code=code, endpoint_type=endpoint_type,
            error_message="The broker does not support endpoint type "
                          f"{endpoint_type}; ask for brokers (1).",
            cluster_id=broker.cluster_id, controller_id=-1, brokers=[],
            cluster_authorized_operations=NO_AUTH_OPS)
    nodes = [DescribeClusterBroker(broker_id=n.node_id, host=n.host, port=n.port,
                                   rack=n.rack, is_fenced=False)
             for n in broker.cluster.live_nodes()]
    ops = broker.authorized_ops(conn, CLUSTER) if request.include_cluster_authorized_operations \
        else NO_AUTH_OPS
    return DescribeClusterResponse(throttle_time_ms=0, error_code=0, error_message=None,
                                   endpoint_type=endpoint_type, cluster_id=broker.cluster_id,
                                   controller_id=broker.cluster.controller(), brokers=nodes,
                                   cluster_authorized_operations=ops)
