"""ListTransactions: the transactional ids this broker coordinates, filtered by state and
producer id (v1: by how long they have been open; v2: by id pattern)."""
import re

from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.list_transactions_response import (
    ListTransactionsResponse,
    TransactionState,
)

API_KEY = 66
VERSIONS = (0, 2)
STATES = ("Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit",
          "CompleteAbort", "Dead", "PrepareEpochFence")


async def handle(broker, conn, header, request):
    states = set(request.state_filters)
    pids = set(request.producer_id_filters)
    duration = getattr(request, "duration_filter", -1)
    pattern = getattr(request, "transactional_id_pattern", None)
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error:
        return ListTransactionsResponse(throttle_time_ms=0,
                                        error_code=ErrorCode.INVALID_REGULAR_EXPRESSION,
                                        unknown_state_filters=[], transaction_states=[])
    now = broker.store.clock.now_ms()
    out = []
    for st in broker.extensions["txn"].states.values():
        if states and st.state not in states or pids and st.pid not in pids:
            continue
        if duration is not None and duration >= 0 and (
                st.state != "Ongoing" or now - st.started_ms < duration):
            continue
        if regex is not None and not regex.fullmatch(st.tid):
            continue
        if not broker.allowed(conn, acls.DESCRIBE, acls.TRANSACTIONAL_ID, st.tid):
            continue
        out.append(TransactionState(transactional_id=st.tid, producer_id=st.pid,
                                    transaction_state=st.state))
    return ListTransactionsResponse(
        throttle_time_ms=0, error_code=0,
        unknown_state_filters=[s for s in request.state_filters if s not in STATES],
        transaction_states=out)
