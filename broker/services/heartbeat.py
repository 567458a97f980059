"""Heartbeat: a classic member is alive; REBALANCE_IN_PROGRESS tells it to rejoin."""
from broker.acls import GROUP, READ
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.heartbeat_response import HeartbeatResponse

API_KEY = 12
VERSIONS = (0, 4)


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    if not request.group_id:
        return HeartbeatResponse(throttle_time_ms=0, error_code=ErrorCode.INVALID_GROUP_ID)
    if not broker.allowed(conn, READ, GROUP, request.group_id):
        return HeartbeatResponse(throttle_time_ms=0,
                                 error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED)
    if coord.not_here(request.group_id):
        return HeartbeatResponse(throttle_time_ms=0, error_code=ErrorCode.NOT_COORDINATOR)
    group = coord.classic(request.group_id, create=False)
    if group is None or isinstance(group, int):
        return HeartbeatResponse(throttle_time_ms=0, error_code=ErrorCode.UNKNOWN_MEMBER_ID)
    code = group.heartbeat(request.member_id, request.group_instance_id,
                           request.generation_id)
    return HeartbeatResponse(throttle_time_ms=0, error_code=code)
