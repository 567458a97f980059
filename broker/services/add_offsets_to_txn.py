"""AddOffsetsToTxn: a transactional producer will commit a group's offsets in its
transaction (TxnOffsetCommit follows)."""
from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.add_offsets_to_txn_response import AddOffsetsToTxnResponse
from broker.transactions import error_code, fenced_code

API_KEY = 25
VERSIONS = (0, 3)


async def handle(broker, conn, header, request):
    if not request.group_id:
        code = ErrorCode.INVALID_GROUP_ID
    elif not broker.allowed(conn, acls.WRITE, acls.TRANSACTIONAL_ID, request.transactional_id):
        code = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not broker.allowed(conn, acls.READ, acls.GROUP, request.group_id):
        code = ErrorCode.GROUP_AUTHORIZATION_FAILED
    else:
        fenced = fenced_code(header.request_api_version, 2)
        code = await error_code(broker.extensions["txn"].add_offsets(
            request.transactional_id, request.producer_id, request.producer_epoch,
            request.group_id, fenced))
    return AddOffsetsToTxnResponse(throttle_time_ms=0, error_code=code)
