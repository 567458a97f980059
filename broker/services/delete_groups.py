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
    coord = broker.extensions["groups"]
    denied = [g for g in names if not broker.allowed(conn, DELETE, GROUP, g)]
    elsewhere = [g for g in names if g not in denied and coord.not_here(g)]
    here = [g for g in names if g not in denied and g not in elsewhere]
    results = dict(await coord.delete_groups(here)) if here else {}
    results.update(dict.fromkeys(denied, ErrorCode.GROUP_AUTHORIZATION_FAILED))
    results.update(dict.fromkeys(elsewhere, ErrorCode.NOT_COORDINATOR))
    return DeleteGroupsResponse(throttle_time_ms=0, results=[
        DeletableGroupResult(group_id=g, error_code=results[g]) for g in names])
