"""InitProducerId: producer ids and epochs for idempotent producers (KIP-98, KIP-360)."""
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.init_producer_id_response import InitProducerIdResponse

API_KEY = 22
VERSIONS = (0, 5)
MAX_EPOCH = 32767


async def handle(broker, conn, header, request):
    def reply(code, pid=-1, epoch=-1):
        return InitProducerIdResponse(throttle_time_ms=0, error_code=code, producer_id=pid,
                                      producer_epoch=epoch)

    if request.transactional_id is not None:
        # Transactions are not served (no AddPartitionsToTxn/EndTxn are advertised).
        return reply(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    pid = getattr(request, "producer_id", -1)
    epoch = getattr(request, "producer_epoch", -1)
    if pid >= 0 and epoch >= 0 and epoch < MAX_EPOCH - 1:
        # An idempotent producer bumping its epoch after a failed batch (KIP-360).
        return reply(0, pid, epoch + 1)
    return reply(0, await broker.producers.allocate_id(), 0)
