"""FindCoordinator: this broker coordinates every group and every transactional id."""
from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.find_coordinator_response import (
    Coordinator,
    FindCoordinatorResponse,
)

API_KEY = 10
VERSIONS = (0, 6)
GROUP, TRANSACTION = 0, 1


def _lookup(broker, conn, key: str, key_type: int) -> tuple[int, str | None]:
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
    cfg = broker.config
    if header.request_api_version >= 4:
        coordinators = []
        for key in request.coordinator_keys:
            code, msg = _lookup(broker, conn, key, request.key_type)
            ok = code == ErrorCode.NONE
            coordinators.append(Coordinator(
                key=key, node_id=cfg.node_id if ok else -1,
                host=cfg.advertised_host if ok else "", port=cfg.advertised_port if ok else -1,
                error_code=code, error_message=msg))
        return FindCoordinatorResponse(throttle_time_ms=0, coordinators=coordinators)
    code, msg = _lookup(broker, conn, request.key, request.key_type)
    ok = code == ErrorCode.NONE
    return FindCoordinatorResponse(
        throttle_time_ms=0, error_code=code, error_message=msg,
        node_id=cfg.node_id if ok else -1, host=cfg.advertised_host if ok else "",
        port=cfg.advertised_port if ok else -1)
