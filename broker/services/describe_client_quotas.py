"""DescribeClientQuotas: the quota entities a filter matches, with their values
(broker/quotas.py). Kafka's errors: CLUSTER_AUTHORIZATION_FAILED without DESCRIBE_CONFIGS
on the cluster, INVALID_REQUEST for a filter it refuses, UNSUPPORTED_VERSION for an entity
type it does not know."""
from broker.acls import DESCRIBE_CONFIGS
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_client_quotas_response import (
    DescribeClientQuotasResponse,
    EntityData,
    EntryData,
    ValueData,
)
from broker.quotas import QuotaError

API_KEY = 48
VERSIONS = (0, 1)


async def handle(broker, conn, header, request):
    if not broker.allowed(conn, DESCRIBE_CONFIGS):
        return DescribeClientQuotasResponse(
            throttle_time_ms=0, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
            error_message="Cluster authorization failed.", entries=None)
    try:
        found = broker.quotas.describe(
            [(c.entity_type, c.match_type, c.match) for c in request.components],
            request.strict)
    except QuotaError as e:
        return DescribeClientQuotasResponse(throttle_time_ms=0, error_code=e.code,
                                            error_message=e.message, entries=None)
    return DescribeClientQuotasResponse(throttle_time_ms=0, error_code=0, error_message=None,
                                        entries=[EntryData(
        entity=[EntityData(entity_type=t, entity_name=n) for t, n in entity],
        values=[ValueData(key=k, value=v) for k, v in sorted(values.items())])
        for entity, values in found])
