"""AddPartitionsToTxn: a transactional producer adds the partitions it is about to write
(v0-v3, what clients send; v4+ carry brokers' batched verification, which a single broker
does not need)."""
from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.add_partitions_to_txn_response import (
    AddPartitionsToTxnPartitionResult,
    AddPartitionsToTxnResponse,
    AddPartitionsToTxnTopicResult,
)
from broker.transactions import error_code, fenced_code

API_KEY = 24
VERSIONS = (0, 3)


def _reply(topics, codes) -> AddPartitionsToTxnResponse:
    return AddPartitionsToTxnResponse(throttle_time_ms=0, results_by_topic_v3_and_below=[
        AddPartitionsToTxnTopicResult(name=t.name, results_by_partition=[
            AddPartitionsToTxnPartitionResult(partition_index=p,
                                              partition_error_code=codes[(t.name, p)])
            for p in t.partitions])
        for t in topics])


async def handle(broker, conn, header, request):
    topics = request.v3_and_below_topics
    wanted = [(t.name, p) for t in topics for p in t.partitions]
    if not broker.allowed(conn, acls.WRITE, acls.TRANSACTIONAL_ID,
                          request.v3_and_below_transactional_id):
        return _reply(topics, dict.fromkeys(
            wanted, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    denied = {(n, p) for n, p in wanted if not broker.allowed(conn, acls.WRITE, acls.TOPIC, n)}
    if denied:
        return _reply(topics, {tp: ErrorCode.TOPIC_AUTHORIZATION_FAILED if tp in denied
                               else ErrorCode.OPERATION_NOT_ATTEMPTED for tp in wanted})
    unknown = {(n, p) for n, p in wanted
               if (t := broker.topics.get(n)) is None or not 0 <= p < t.partitions}
    if unknown:  # none is added: the unknown ones say why, the others were not attempted
        return _reply(topics, {tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if tp in unknown
                               else ErrorCode.OPERATION_NOT_ATTEMPTED for tp in wanted})
    fenced = fenced_code(header.request_api_version, 2)
    code = await error_code(broker.extensions["txn"].add_partitions(
        request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
        request.v3_and_below_producer_epoch, wanted, fenced))
    return _reply(topics, dict.fromkeys(wanted, code))
