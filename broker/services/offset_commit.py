"""OffsetCommit: store a group's offsets (with metadata) durably, after Kafka's checks."""
from broker.acls import GROUP, READ, TOPIC
from broker.groups.offsets import MAX_METADATA_BYTES
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.offset_commit_response import (
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
)
from s2core.errors import S2Error

API_KEY = 8
VERSIONS = (2, 10)


def _reply(request, codes: dict) -> OffsetCommitResponse:
    return OffsetCommitResponse(throttle_time_ms=0, topics=[
        OffsetCommitResponseTopic(name=t.name, topic_id=t.topic_id, partitions=[
            OffsetCommitResponsePartition(partition_index=p.partition_index,
                                          error_code=codes[(i, p.partition_index)])
            for p in t.partitions])
        for i, t in enumerate(request.topics)])


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    version = header.request_api_version
    keys = [(i, p.partition_index) for i, t in enumerate(request.topics) for p in t.partitions]
    if not request.group_id:
        return _reply(request, dict.fromkeys(keys, ErrorCode.INVALID_GROUP_ID))
    if not broker.allowed(conn, READ, GROUP, request.group_id):
        return _reply(request, dict.fromkeys(keys, ErrorCode.GROUP_AUTHORIZATION_FAILED))
    if coord.not_here(request.group_id):
        return _reply(request, dict.fromkeys(keys, ErrorCode.NOT_COORDINATOR))
    code = coord.commit_error(request.group_id, request.generation_id_or_member_epoch,
                              request.member_id, request.group_instance_id, version)
    if code:
        return _reply(request, dict.fromkeys(keys, code))
    codes, rows = {}, []
    now = broker.store.clock.now_ms()
    for i, t in enumerate(request.topics):
        topic = broker.topics.by_id.get(t.topic_id) if version >= 10 \
            else broker.topics.get(t.name)
        missing = ErrorCode.UNKNOWN_TOPIC_ID if version >= 10 \
            else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        for p in t.partitions:
            key = (i, p.partition_index)
            meta = p.committed_metadata
            if topic is not None and not broker.allowed(conn, READ, TOPIC, topic.name):
                codes[key] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif topic is None or not 0 <= p.partition_index < topic.partitions:
                codes[key] = missing
            elif meta is not None and len(meta) > MAX_METADATA_BYTES:
                codes[key] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                codes[key] = ErrorCode.NONE
                epoch = p.committed_leader_epoch if version >= 6 else -1
                rows.append([topic.name, p.partition_index, p.committed_offset,
                             -1 if epoch is None else epoch, meta or "", now])
    if not rows:
        return _reply(request, codes)
    try:  # sequenced in request order; durability is awaited concurrently
        pending = await coord.submit_commit(request.group_id, rows)
    except S2Error:  # the store's error: nothing stored, the client retries
        return _reply(request, _failed(codes))
    return _durable(coord, request, codes, pending)


def _failed(codes: dict) -> dict:
    return {k: (ErrorCode.COORDINATOR_NOT_AVAILABLE if c == ErrorCode.NONE else c)
            for k, c in codes.items()}


async def _durable(coord, request, codes, pending):
    try:
        await coord.journal.wait(pending)
    except S2Error:  # not durable: the client retries
        codes = _failed(codes)
    return _reply(request, codes)
