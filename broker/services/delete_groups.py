"""DeleteGroups: drop empty groups and their offsets (NON_EMPTY_GROUP while members remain)."""
from broker.protocol.messages.delete_groups_response import (
    DeletableGroupResult,
    DeleteGroupsResponse,
)

API_KEY = 42
VERSIONS = (0, 2)


async def handle(broker, conn, header, request):
    return _delete(broker.extensions["groups"], list(request.groups_names))


async def _delete(coord, names):
    results = await coord.delete_groups(names)
    return DeleteGroupsResponse(throttle_time_ms=0, results=[
        DeletableGroupResult(group_id=g, error_code=c) for g, c in results])
