"""EndTxn: commit or abort a transaction (markers into its partitions, staged offsets
into its groups on commit)."""
from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.end_txn_response import EndTxnResponse
from broker.transactions import error_code, fenced_code

API_KEY = 26
VERSIONS = (0, 3)


async def handle(broker, conn, header, request):
    if not broker.allowed(conn, acls.WRITE, acls.TRANSACTIONAL_ID, request.transactional_id):
        return EndTxnResponse(throttle_time_ms=0,
                              error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    fenced = fenced_code(header.request_api_version, 2)
    code = await error_code(broker.extensions["txn"].end_txn(
        request.transactional_id, request.producer_id, request.producer_epoch,
        request.committed, fenced))
    return EndTxnResponse(throttle_time_ms=0, error_code=code)
