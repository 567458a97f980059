"""TxnOffsetCommit: offsets a transaction commits to a group (staged until EndTxn)."""
from broker import acls
from broker.groups.offsets import MAX_METADATA_BYTES
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.txn_offset_commit_response import (
    TxnOffsetCommitResponse,
    TxnOffsetCommitResponsePartition,
    TxnOffsetCommitResponseTopic,
)
from broker.transactions import TxnError, fenced_code
from s2core.errors import S2Error

API_KEY = 28
VERSIONS = (0, 3)


def _reply(request, codes) -> TxnOffsetCommitResponse:
    return TxnOffsetCommitResponse(throttle_time_ms=0, topics=[
        TxnOffsetCommitResponseTopic(name=t.name, partitions=[
            TxnOffsetCommitResponsePartition(partition_index=p.partition_index,
                                             error_code=codes[(t.name, p.partition_index)])
            for p in t.partitions])
        for t in request.topics])


async def handle(broker, conn, header, request):
    version = header.request_api_version
    keys = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
    if not request.group_id:
        return _reply(request, dict.fromkeys(keys, ErrorCode.INVALID_GROUP_ID))
    if not broker.allowed(conn, acls.WRITE, acls.TRANSACTIONAL_ID, request.transactional_id):
        return _reply(request, dict.fromkeys(keys,
                                             ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    if not broker.allowed(conn, acls.READ, acls.GROUP, request.group_id):
        return _reply(request, dict.fromkeys(keys, ErrorCode.GROUP_AUTHORIZATION_FAILED))
    if broker.extensions["groups"].not_here(request.group_id):
        return _reply(request, dict.fromkeys(keys, ErrorCode.NOT_COORDINATOR))
    if version >= 3:  # the consumer's group membership, as OffsetCommit checks it
        code = broker.extensions["groups"].commit_error(
            request.group_id, request.generation_id, request.member_id,
            request.group_instance_id, 8)
        if code:
            return _reply(request, dict.fromkeys(keys, code))
    codes, rows = {}, []
    for t in request.topics:
        topic = broker.topics.get(t.name)
        for p in t.partitions:
            key = (t.name, p.partition_index)
            meta = p.committed_metadata
            if not broker.allowed(conn, acls.READ, acls.TOPIC, t.name):
                codes[key] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif topic is None or not 0 <= p.partition_index < topic.partitions:
                codes[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif meta is not None and len(meta) > MAX_METADATA_BYTES:
                codes[key] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                codes[key] = ErrorCode.NONE
                epoch = p.committed_leader_epoch if version >= 2 else -1
                rows.append([t.name, p.partition_index, p.committed_offset,
                             -1 if epoch is None else epoch, meta or ""])
    if rows:
        fenced = fenced_code(version, 2)
        try:
            await broker.extensions["txn"].stage_offsets(
                request.transactional_id, request.producer_id, request.producer_epoch,
                request.group_id, rows, fenced)
        except TxnError as e:
            codes = {k: (e.code if c == ErrorCode.NONE else c) for k, c in codes.items()}
        except S2Error:
            codes = {k: (ErrorCode.COORDINATOR_NOT_AVAILABLE if c == ErrorCode.NONE else c)
                     for k, c in codes.items()}
    return _reply(request, codes)
