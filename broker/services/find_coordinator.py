"""FindCoordinator: this broker coordinates every group and every transactional id."""
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.find_coordinator_response import (
    Coordinator,
    FindCoordinatorResponse,
)

API_KEY = 10
VERSIONS = (0, 6)
GROUP, TRANSACTION = 0, 1


def _lookup(broker, key: str, key_type: int) -> tuple[int, str | None]:
    if key_type not in (GROUP, TRANSACTION):
        return ErrorCode.INVALID_REQUEST, f"Unsupported key type {key_type}."
    return ErrorCode.NONE, None


async def handle(broker, conn, header, request):
    cfg = broker.config
    if header.request_api_version >= 4:
        coordinators = []
        for key in request.coordinator_keys:
            code, msg = _lookup(broker, key, request.key_type)
            ok = code == ErrorCode.NONE
            coordinators.append(Coordinator(
                key=key, node_id=cfg.node_id if ok else -1,
                host=cfg.advertised_host if ok else "", port=cfg.advertised_port if ok else -1,
                error_code=code, error_message=msg))
        return FindCoordinatorResponse(throttle_time_ms=0, coordinators=coordinators)
    code, msg = _lookup(broker, request.key, request.key_type)
    ok = code == ErrorCode.NONE
    return FindCoordinatorResponse(
        throttle_time_ms=0, error_code=code, error_message=msg,
        node_id=cfg.node_id if ok else -1, host=cfg.advertised_host if ok else "",
        port=cfg.advertised_port if ok else -1)
