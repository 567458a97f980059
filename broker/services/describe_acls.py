"""DescribeAcls: SECURITY_DISABLED, as Kafka answers without an authorizer (see _acls)."""
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_acls_response import DescribeAclsResponse
from broker.services._acls import NO_AUTHORIZER

API_KEY = 29
VERSIONS = (1, 3)


async def handle(broker, conn, header, request):
    return DescribeAclsResponse(throttle_time_ms=0, error_code=ErrorCode.SECURITY_DISABLED,
                                error_message=NO_AUTHORIZER, resources=[])
