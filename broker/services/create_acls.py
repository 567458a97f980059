"""CreateAcls: SECURITY_DISABLED for every ACL, as Kafka answers without an authorizer (see
_acls): nothing is stored that would not be enforced."""
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.create_acls_response import AclCreationResult, CreateAclsResponse
from broker.services._acls import NO_AUTHORIZER

API_KEY = 30
VERSIONS = (1, 3)


async def handle(broker, conn, header, request):
    return CreateAclsResponse(throttle_time_ms=0, results=[
        AclCreationResult(error_code=ErrorCode.SECURITY_DISABLED, error_message=NO_AUTHORIZER)
        for _ in request.creations])
