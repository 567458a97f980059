"""ListTransactions: this broker coordinates no transactions (transactional producers are
refused: InitProducerId, FindCoordinator), so the list is empty; state filters Kafka does
not know are returned as unknown, as Kafka returns them."""
from broker.protocol.messages.list_transactions_response import ListTransactionsResponse

API_KEY = 66
VERSIONS = (0, 2)
STATES = ("Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit",
          "CompleteAbort", "Dead", "PrepareEpochFence")


async def handle(broker, conn, header, request):
    return ListTransactionsResponse(
        throttle_time_ms=0, error_code=0,
        unknown_state_filters=[s for s in request.state_filters if s not in STATES],
        transaction_states=[])
