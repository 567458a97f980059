"""AlterClientQuotas: set or remove quota values per entity (broker/quotas.py), each
entry answered on its own. Kafka's errors: CLUSTER_AUTHORIZATION_FAILED without
ALTER_CONFIGS on the cluster, INVALID_REQUEST for an entity, key or value it refuses."""
from broker.acls import ALTER_CONFIGS
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.alter_client_quotas_response import (
    AlterClientQuotasResponse,
    EntityData,
    EntryData,
)

API_KEY = 49
VERSIONS = (0, 1)


async def handle(broker, conn, header, request):
    def entity(e):
        return [EntityData(entity_type=x.entity_type, entity_name=x.entity_name)
                for x in e.entity]

    if not broker.allowed(conn, ALTER_CONFIGS):
        return AlterClientQuotasResponse(throttle_time_ms=0, entries=[EntryData(
            error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
            error_message="Cluster authorization failed.", entity=entity(e))
            for e in request.entries])
    results = await broker.quotas.alter(
        [([(x.entity_type, x.entity_name) for x in e.entity],
          [(op.key, op.value, op.remove) for op in e.ops]) for e in request.entries],
        request.validate_only)
    return AlterClientQuotasResponse(throttle_time_ms=0, entries=[
        EntryData(error_code=code, error_message=message, entity=entity(e))
        for e, (code, message) in zip(request.entries, results)])
