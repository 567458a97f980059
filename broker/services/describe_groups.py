"""DescribeGroups: state, protocol and members of groups."""
from broker.acls import DESCRIBE, GROUP
from broker.groups.classic import STABLE, ClassicGroup
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_groups_response import (
    DescribedGroup,
    DescribedGroupMember,
    DescribeGroupsResponse,
)
from broker.services._common import NO_AUTH_OPS

API_KEY = 15
VERSIONS = (0, 6)


def _describe(coord, gid: str, version: int) -> DescribedGroup:
    if coord.not_here(gid):
        return DescribedGroup(error_code=ErrorCode.NOT_COORDINATOR, error_message=None,
                              group_id=gid, group_state="", protocol_type="",
                              protocol_data="", members=[],
                              authorized_operations=NO_AUTH_OPS)
    group = coord.group(gid)
    if not isinstance(group, ClassicGroup):
        # Unknown, or a KIP-848 group (described by ConsumerGroupDescribe).
        code = ErrorCode.GROUP_ID_NOT_FOUND if version >= 6 else ErrorCode.NONE
        msg = (f"Group {gid} not found." if group is None
               else f"Group {gid} is not a classic group.") if version >= 6 else None
        return DescribedGroup(error_code=code, error_message=msg, group_id=gid,
                              group_state="Dead", protocol_type="", protocol_data="",
                              members=[], authorized_operations=NO_AUTH_OPS)
    stable = group.state == STABLE
    members = [DescribedGroupMember(
        member_id=m.member_id, group_instance_id=m.instance_id, client_id=m.client_id,
        client_host=m.client_host,
        member_metadata=m.metadata(group.protocol_name) if stable else b"",
        member_assignment=m.assignment if stable else b"")
        for m in group.members.values()]
    return DescribedGroup(error_code=0, group_id=gid, group_state=group.state,
                          protocol_type=group.protocol_type or "",
                          protocol_data=(group.protocol_name or "") if stable else "",
                          members=members, authorized_operations=NO_AUTH_OPS)


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    groups = [
        _describe(coord, gid, header.request_api_version)
        if broker.allowed(conn, DESCRIBE, GROUP, gid) else DescribedGroup(
            error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED, error_message=None, group_id=gid,
            group_state="", protocol_type="", protocol_data="", members=[],
            authorized_operations=NO_AUTH_OPS)
        for gid in request.groups]
    if getattr(request, "include_authorized_operations", False):  # (v3+)
        for g in groups:
            if g.error_code == 0 and g.group_state != "Dead":
                g.authorized_operations = broker.authorized_ops(conn, GROUP, g.group_id)
    return DescribeGroupsResponse(throttle_time_ms=0, groups=groups)
