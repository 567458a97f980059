"""DeleteGroups: drop empty groups and their offsets (NON_EMPTY_GROUP while members remain;
GROUP_AUTHORIZATION_FAILED without DELETE on the group)."""
from broker.acls import DELETE, GROUP
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.delete_groups_response import (
    DeletableGroupResult,
    DeleteGroupsResponse,
)

API_KEY = 42
VERSIONS = (0, 2)


async def handle(broker, conn, header, request):
    names = list(request.groups_names)
    denied = [g for g in names if not broker.allowed(conn, DELETE, GROUP, g)]
    results = dict(await broker.extensions["groups"].delete_groups(
        [g for g in names if g not in denied])) if len(denied) < len(names) else {}
    return DeleteGroupsResponse(throttle_time_ms=0, results=[
        DeletableGroupResult(group_id=g, error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED
                             if g in denied else results[g]) for g in names])
