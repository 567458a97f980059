"""FindCoordinator: alone, this broker coordinates every group and every transactional
id; in a cluster (broker/cluster.py) a group's or a transactional id's coordinator is the
broker that serves the group journal stream its name hashes to."""
from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.find_coordinator_response import (
    Coordinator,
    FindCoordinatorResponse,
)

API_KEY = 10
VERSIONS = (0, 6)
GROUP, TRANSACTION = 0, 1


async def _lookup(broker, conn, key: str, key_type: int):
    """(error code, message, coordinator node)."""
    code, msg = _check(broker, conn, key, key_type)
    if code != ErrorCode.NONE:
        return code, msg, None
    cluster = broker.cluster
    if not cluster.enabled:
        return code, msg, cluster.node(cluster.node_id)
    node_id = await broker.extensions["txn" if key_type == TRANSACTION
                                      else "groups"].coordinator_of(key)
    node = cluster.node(node_id) if node_id is not None else None
    if node is None:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, "The coordinator is not available.", None
    return code, msg, node


def _check(broker, conn, key: str, key_type: int) -> tuple[int, str | None]:
    if key_type not in (GROUP, TRANSACTION):
        return ErrorCode.INVALID_REQUEST, f"Unsupported key type {key_type}."
    if key_type == GROUP and not broker.allowed(conn, acls.DESCRIBE, acls.GROUP, key):
        return ErrorCode.GROUP_AUTHORIZATION_FAILED, "Group authorization failed."
    if key_type == TRANSACTION and not broker.allowed(conn, acls.DESCRIBE,
                                                      acls.TRANSACTIONAL_ID, key):
        return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, \
            "Transactional Id authorization failed."
    return ErrorCode.NONE, None


async def handle(broker, conn, header, request):
    if header.request_api_version >= 4:
        coordinators = []
        for key in request.coordinator_keys:
            code, msg, node = await _lookup(broker, conn, key, request.key_type)
            coordinators.append(Coordinator(
                key=key, node_id=node.node_id if node else -1,
                host=node.host if node else "", port=node.port if node else -1,
                error_code=code, error_message=msg))
        return FindCoordinatorResponse(throttle_time_ms=0, coordinators=coordinators)
    code, msg, node = await _lookup(broker, conn, request.key, request.key_type)
    return FindCoordinatorResponse(
        throttle_time_ms=0, error_code=code, error_message=msg,
        node_id=node.node_id if node else -1, host=node.host if node else "",
        port=node.port if node else -1)
