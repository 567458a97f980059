"""LeaveGroup: members leave a classic group (one by member id, or a batch from v3)."""
from broker.acls import GROUP, READ
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.leave_group_response import LeaveGroupResponse, MemberResponse

API_KEY = 13
VERSIONS = (0, 5)


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    version = header.request_api_version
    if version < 3:
        leaving = [(request.member_id, None)]
    else:
        leaving = [(m.member_id, m.group_instance_id) for m in request.members]
    if request.group_id and not broker.allowed(conn, READ, GROUP, request.group_id):
        if version < 3:
            return LeaveGroupResponse(throttle_time_ms=0,
                                      error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED)
        return LeaveGroupResponse(throttle_time_ms=0,
                                  error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED, members=[])
    if request.group_id and coord.not_here(request.group_id):
        if version < 3:
            return LeaveGroupResponse(throttle_time_ms=0, error_code=ErrorCode.NOT_COORDINATOR)
        return LeaveGroupResponse(throttle_time_ms=0, error_code=ErrorCode.NOT_COORDINATOR,
                                  members=[])
    group = coord.classic(request.group_id, create=False) if request.group_id else None
    if group is None or isinstance(group, int):
        code = ErrorCode.INVALID_GROUP_ID if not request.group_id \
            else ErrorCode.UNKNOWN_MEMBER_ID
        if version < 3:
            return LeaveGroupResponse(throttle_time_ms=0, error_code=code)
        if code == ErrorCode.INVALID_GROUP_ID:
            return LeaveGroupResponse(throttle_time_ms=0, error_code=code, members=[])
        return LeaveGroupResponse(throttle_time_ms=0, error_code=0, members=[
            MemberResponse(member_id=m, group_instance_id=i, error_code=code)
            for m, i in leaving])
    codes = [group.leave(m, i) for m, i in leaving]
    if any(c == ErrorCode.NONE for c in codes):
        group.after_leave()
        coord.changed(group)
    if version < 3:
        return LeaveGroupResponse(throttle_time_ms=0, error_code=codes[0])
    return LeaveGroupResponse(throttle_time_ms=0, error_code=0, members=[
        MemberResponse(member_id=m, group_instance_id=i, error_code=c)
        for (m, i), c in zip(leaving, codes)])
