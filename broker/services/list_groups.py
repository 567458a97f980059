"""ListGroups: every group, filtered by state (v4+) and type (v5+)."""
from broker.acls import DESCRIBE, GROUP
from broker.groups.classic import ClassicGroup
from broker.protocol.messages.list_groups_response import ListedGroup, ListGroupsResponse

API_KEY = 16
VERSIONS = (0, 5)


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    version = header.request_api_version
    states = {s.lower() for s in request.states_filter} if version >= 4 else set()
    types = {t.lower() for t in request.types_filter} if version >= 5 else set()
    groups = []
    everything = broker.allowed(conn, DESCRIBE)  # (else the groups it may describe)
    for gid, group in sorted(coord.groups.items()):
        if not everything and not broker.allowed(conn, DESCRIBE, GROUP, gid):
            continue
        classic = isinstance(group, ClassicGroup)
        kind = "classic" if classic else "consumer"
        if states and group.state.lower() not in states:
            continue
        if types and kind not in types:
            continue
        groups.append(ListedGroup(group_id=gid,
                                  protocol_type=(group.protocol_type or "") if classic
                                  else "consumer",
                                  group_state=group.state, group_type=kind))
    return ListGroupsResponse(throttle_time_ms=0, error_code=0, groups=groups)
