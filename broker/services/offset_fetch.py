"""OffsetFetch: a group's committed offsets (one group before v8, several from v8). With
`require_stable` (v7+, what read_committed consumers send), a partition whose offset an
open transaction is about to commit answers UNSTABLE_OFFSET_COMMIT (retriable), as Kafka
does, so that the consumer does not start from the offset before it."""
from broker.acls import DESCRIBE, GROUP, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.offset_fetch_response import (
    OffsetFetchResponse,
    OffsetFetchResponseGroup,
    OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
)

API_KEY = 9
VERSIONS = (1, 10)


def _live(broker, coord, group_id):
    """The group's offsets of topics that exist, committed since the topic was created
    (a deleted and recreated topic starts without offsets, as in Kafka)."""
    out = {}
    for (t, p), e in coord.offsets.of_group(group_id).items():
        topic = broker.topics.get(t)
        if topic is not None and e.commit_ms >= topic.created_ms:
            out[(t, p)] = e
    return out


def _group(broker, coord, version, group_id, topics, member_id=None, member_epoch=-1,
           stable=False, conn=None):
    """(error, [(name, topic_id, [(partition, offset, epoch, metadata, error)])])."""
    if not broker.allowed(conn, DESCRIBE, GROUP, group_id):
        return ErrorCode.GROUP_AUTHORIZATION_FAILED, []
    if coord.not_here(group_id):
        if version >= 2 or topics is None:
            return ErrorCode.NOT_COORDINATOR, []
        # (v1 has no group error: each partition says it)
        return ErrorCode.NONE, [(t.name, None, [(p, -1, -1, "", ErrorCode.NOT_COORDINATOR)
                                                for p in t.partition_indexes])
                                for t in topics]
    code = coord.fetch_error(group_id, member_id, member_epoch)
    if code:
        return code, []
    table = _live(broker, coord, group_id)
    unstable = broker.extensions["txn"].pending_offsets(group_id) if stable else ()
    out = []
    if topics is None:
        by_topic: dict[str, list] = {}
        for (t, p), e in sorted(table.items()):
            if broker.allowed(conn, DESCRIBE, TOPIC, t):  # (the others are left out)
                by_topic.setdefault(t, []).append((p, e.offset, e.leader_epoch, e.metadata,
                                                   0))
        for t, parts in by_topic.items():
            out.append((t, broker.topics.get(t).id, parts))
        return ErrorCode.NONE, out
    for t in topics:
        if version >= 10:
            topic = broker.topics.by_id.get(t.topic_id)
            name = topic.name if topic else None
        else:
            name = t.name
        parts = []
        for p in t.partition_indexes:
            e = table.get((name, p)) if name is not None else None
            if name is not None and not broker.allowed(conn, DESCRIBE, TOPIC, name):
                parts.append((p, -1, -1, "", ErrorCode.TOPIC_AUTHORIZATION_FAILED))
            elif (name, p) in unstable:
                parts.append((p, -1, -1, "", ErrorCode.UNSTABLE_OFFSET_COMMIT))
            elif e is None:
                err = ErrorCode.UNKNOWN_TOPIC_ID if version >= 10 and name is None else 0
                parts.append((p, -1, -1, "", err))
            else:
                parts.append((p, e.offset, e.leader_epoch, e.metadata, 0))
        out.append((t.name if version < 10 else (name or ""), getattr(t, "topic_id", None),
                    parts))
    return ErrorCode.NONE, out


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    version = header.request_api_version
    if version >= 8:
        groups = []
        for g in request.groups:
            code, topics = _group(broker, coord, version, g.group_id, g.topics,
                                  g.member_id if version >= 9 else None,
                                  g.member_epoch if version >= 9 else -1,
                                  request.require_stable, conn)
            groups.append(OffsetFetchResponseGroup(group_id=g.group_id, error_code=code, topics=[
                OffsetFetchResponseTopics(name=n, topic_id=tid or bytes(16), partitions=[
                    OffsetFetchResponsePartitions(
                        partition_index=p, committed_offset=o, committed_leader_epoch=e,
                        metadata=m, error_code=err) for p, o, e, m, err in parts])
                for n, tid, parts in topics]))
        return OffsetFetchResponse(throttle_time_ms=0, groups=groups)
    code, topics = _group(broker, coord, version, request.group_id, request.topics,
                          stable=version >= 7 and request.require_stable, conn=conn)
    return OffsetFetchResponse(throttle_time_ms=0, error_code=code, topics=[
        OffsetFetchResponseTopic(name=n, partitions=[
            OffsetFetchResponsePartition(partition_index=p, committed_offset=o,
                                         committed_leader_epoch=e, metadata=m,
                                         error_code=err)
            for p, o, e, m, err in parts])
        for n, _tid, parts in topics])
