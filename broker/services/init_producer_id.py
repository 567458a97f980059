"""InitProducerId: producer ids and epochs for idempotent and transactional producers
(KIP-98, KIP-360; transactional ids: broker/transactions.py)."""
from broker import acls
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.init_producer_id_response import InitProducerIdResponse
from broker.transactions import TxnError, fenced_code
from s2core.errors import S2Error

API_KEY = 22
VERSIONS = (0, 5)
MAX_EPOCH = 32767


async def handle(broker, conn, header, request):
    def reply(code, pid=-1, epoch=-1):
        return InitProducerIdResponse(throttle_time_ms=0, error_code=code, producer_id=pid,
                                      producer_epoch=epoch)

    pid = getattr(request, "producer_id", -1)
    epoch = getattr(request, "producer_epoch", -1)
    if request.transactional_id is not None:
        if not broker.allowed(conn, acls.WRITE, acls.TRANSACTIONAL_ID, request.transactional_id):
            return reply(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        fenced = fenced_code(header.request_api_version, 4)
        try:
            pid, epoch = await broker.extensions["txn"].init_producer_id(
                request.transactional_id, request.transaction_timeout_ms, pid, epoch, fenced)
        except TxnError as e:
            return reply(e.code)
        except S2Error:
            return reply(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        return reply(0, pid, epoch)
    if not (broker.allowed(conn, acls.IDEMPOTENT_WRITE)
            or broker.allowed_any(conn, acls.WRITE, acls.TOPIC)):
        return reply(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    if pid >= 0 and epoch >= 0 and epoch < MAX_EPOCH - 1:
        # An idempotent producer bumping its epoch after a failed batch (KIP-360).
        return reply(0, pid, epoch + 1)
    return reply(0, await broker.producers.allocate_id(), 0)
