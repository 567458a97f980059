"""DescribeTransactions: the state of transactional ids (kafka-transactions.sh describe)."""
from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_transactions_response import (
    DescribeTransactionsResponse,
    TopicData,
    TransactionState,
)

API_KEY = 65
VERSIONS = (0, 0)


async def handle(broker, conn, header, request):
    out = []
    for tid in request.transactional_ids:
        st = broker.extensions["txn"].describe(tid)
        if not broker.allowed(conn, acls.DESCRIBE, acls.TRANSACTIONAL_ID, tid):
            out.append(TransactionState(
                error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                transactional_id=tid, transaction_state="", transaction_timeout_ms=0,
                transaction_start_time_ms=-1, producer_id=-1, producer_epoch=-1, topics=[]))
            continue
        if st is None:
            here = broker.extensions["txn"].here(tid)
            out.append(TransactionState(error_code=ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
                                        if here else ErrorCode.NOT_COORDINATOR,
                                        transactional_id=tid, transaction_state="",
                                        transaction_timeout_ms=0,
                                        transaction_start_time_ms=-1, producer_id=-1,
                                        producer_epoch=-1, topics=[]))
            continue
        topics: dict[str, list[int]] = {}
        for t, p in st.partitions if st.state == "Ongoing" else ():
            topics.setdefault(t, []).append(p)
        out.append(TransactionState(
            error_code=0, transactional_id=tid, transaction_state=st.state,
            transaction_timeout_ms=st.timeout_ms,
            transaction_start_time_ms=st.started_ms if st.state == "Ongoing" else -1,
            producer_id=st.pid, producer_epoch=st.epoch,
            topics=[TopicData(topic=t, partitions=ps) for t, ps in topics.items()]))
    return DescribeTransactionsResponse(throttle_time_ms=0, transaction_states=out)
