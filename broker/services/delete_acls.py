"""DeleteAcls: SECURITY_DISABLED for every filter, as Kafka answers without an authorizer
(see _acls)."""
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.delete_acls_response import (
    DeleteAclsFilterResult,
    DeleteAclsResponse,
)
from broker.services._acls import NO_AUTHORIZER

API_KEY = 31
VERSIONS = (1, 3)


async def handle(broker, conn, header, request):
    return DeleteAclsResponse(throttle_time_ms=0, filter_results=[
        DeleteAclsFilterResult(error_code=ErrorCode.SECURITY_DISABLED,
                               error_message=NO_AUTHORIZER, matching_acls=[])
        for _ in request.filters])
