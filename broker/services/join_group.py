"""JoinGroup: enter a classic group's rebalance; answered when the join phase completes."""
import asyncio

from broker.acls import GROUP, READ
from broker.groups.classic import JoinResult
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.join_group_response import JoinGroupResponse, JoinGroupResponseMember
from s2core.errors import S2Error

API_KEY = 11
VERSIONS = (0, 9)


def client_host(conn) -> str:
    peer = getattr(conn, "peer", None)
    return f"/{peer[0]}" if peer else ""


def _response(r: JoinResult) -> JoinGroupResponse:
    return JoinGroupResponse(
        throttle_time_ms=0, error_code=r.error, generation_id=r.generation,
        protocol_type=r.protocol_type, protocol_name=r.protocol_name or "",
        leader=r.leader, skip_assignment=r.skip_assignment, member_id=r.member_id,
        members=[JoinGroupResponseMember(member_id=m, group_instance_id=i, metadata=md)
                 for m, i, md in r.members])


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    version = header.request_api_version
    if version == 0:
        request.rebalance_timeout_ms = request.session_timeout_ms
    if not request.group_id:
        return _response(JoinResult(ErrorCode.INVALID_GROUP_ID, request.member_id))
    if not broker.allowed(conn, READ, GROUP, request.group_id):
        return _response(JoinResult(ErrorCode.GROUP_AUTHORIZATION_FAILED, request.member_id))
    if coord.not_here(request.group_id):
        return _response(JoinResult(ErrorCode.NOT_COORDINATOR, request.member_id))
    if not coord.check_session_timeout(request.session_timeout_ms):
        return _response(JoinResult(ErrorCode.INVALID_SESSION_TIMEOUT, request.member_id))
    existing = coord.group(request.group_id)
    if existing is None and request.member_id:
        return _response(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, request.member_id))
    group = coord.classic(request.group_id, create=True)
    if isinstance(group, int):
        return _response(JoinResult(group, request.member_id))
    result = group.join(request, version, header.client_id or "", client_host(conn))
    if existing is None and group.is_empty() and not group.pending:
        coord.forget(request.group_id)  # a refused first join leaves no group
    if isinstance(result, asyncio.Future):
        return _wait(result)
    if result.error == ErrorCode.NONE and request.group_instance_id is not None:
        # a static member replaced: store, then answer
        return _stored(coord.spawn(coord.persist(group)), result)
    return _response(result)


async def _wait(fut):
    return _response(await fut)


async def _stored(stored, result):
    try:
        await stored
    except S2Error:  # not durable: the member retries
        return _response(JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, result.member_id))
    return _response(result)
