"""OffsetDelete: drop a group's offsets for partitions it does not consume."""
from broker.acls import DELETE, GROUP, READ, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.offset_delete_response import (
    OffsetDeleteResponse,
    OffsetDeleteResponsePartition,
    OffsetDeleteResponseTopic,
)

API_KEY = 47
VERSIONS = (0, 0)


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    gid = request.group_id
    group = coord.group(gid)
    if not gid:
        return OffsetDeleteResponse(error_code=ErrorCode.INVALID_GROUP_ID, throttle_time_ms=0,
                                    topics=[])
    if not broker.allowed(conn, DELETE, GROUP, gid):
        return OffsetDeleteResponse(error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                                    throttle_time_ms=0, topics=[])
    if coord.not_here(gid):
        return OffsetDeleteResponse(error_code=ErrorCode.NOT_COORDINATOR,
                                    throttle_time_ms=0, topics=[])
    if group is None and not coord.offsets.has_group(gid):
        return OffsetDeleteResponse(error_code=ErrorCode.GROUP_ID_NOT_FOUND,
                                    throttle_time_ms=0, topics=[])
    topics, keys = [], []
    for t in request.topics:
        subscribed = group.subscribed(t.name) if group is not None and \
            not group.is_empty() else False
        if subscribed is None:  # a non-consumer protocol: its topics are unknown
            return OffsetDeleteResponse(error_code=ErrorCode.NON_EMPTY_GROUP,
                                        throttle_time_ms=0, topics=[])
        parts = []
        for p in t.partitions:
            if not broker.allowed(conn, READ, TOPIC, t.name):
                code = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif subscribed:
                code = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
            elif broker.topics.get(t.name) is None:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            else:
                code = ErrorCode.NONE
                keys.append([t.name, p.partition_index])
            parts.append(OffsetDeleteResponsePartition(partition_index=p.partition_index,
                                                       error_code=code))
        topics.append(OffsetDeleteResponseTopic(name=t.name, partitions=parts))
    resp = OffsetDeleteResponse(error_code=0, throttle_time_ms=0, topics=topics)
    if not keys:
        return resp
    return _delete(coord, gid, keys, resp)


async def _delete(coord, gid, keys, resp):
    await coord.delete_offsets(gid, keys)
    return resp
