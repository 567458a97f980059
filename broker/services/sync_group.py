"""SyncGroup: the leader hands out the assignment; every member receives its own."""
import asyncio

from broker.acls import GROUP, READ
from broker.groups.classic import SyncResult
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.sync_group_response import SyncGroupResponse

API_KEY = 14
VERSIONS = (0, 5)


def _response(r: SyncResult) -> SyncGroupResponse:
    return SyncGroupResponse(throttle_time_ms=0, error_code=r.error,
                             protocol_type=r.protocol_type, protocol_name=r.protocol_name,
                             assignment=r.assignment)


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    if not request.group_id:
        return _response(SyncResult(ErrorCode.INVALID_GROUP_ID))
    if not broker.allowed(conn, READ, GROUP, request.group_id):
        return _response(SyncResult(ErrorCode.GROUP_AUTHORIZATION_FAILED))
    if coord.not_here(request.group_id):
        return _response(SyncResult(ErrorCode.NOT_COORDINATOR))
    group = coord.classic(request.group_id, create=False)
    if group is None or isinstance(group, int):
        return _response(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
    result, leader = group.sync(request, header.request_api_version)
    if leader:  # stored now, even if the connection is busy with earlier responses
        return _wait(coord.spawn(coord.sync_leader(group, result)))
    if isinstance(result, asyncio.Future):
        return _wait(result)
    return _response(result)


async def _wait(fut):
    return _response(await fut)
