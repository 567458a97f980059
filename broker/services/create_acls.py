"""CreateAcls: store ACL bindings (ALTER on the cluster); an invalid one gets
INVALID_REQUEST with Kafka's reason. SECURITY_DISABLED without an authorizer, as Kafka
answers: nothing is stored that would not be enforced (see _acls)."""
from broker.acls import Binding, binding_error
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.create_acls_response import AclCreationResult, CreateAclsResponse
from broker.services._acls import ALTER_CLUSTER, NO_AUTHORIZER
from s2core.errors import S2Error

API_KEY = 30
VERSIONS = (1, 3)


async def handle(broker, conn, header, request):
    def results(code, message):
        return CreateAclsResponse(throttle_time_ms=0, results=[
            AclCreationResult(error_code=code, error_message=message)
            for _ in request.creations])
    if not broker.acls.enabled:
        return results(ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    if not broker.allowed(conn, *ALTER_CLUSTER):
        return results(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
    out, good = [], []
    for c in request.creations:
        b = Binding(c.resource_type, c.resource_name, c.resource_pattern_type, c.principal,
                    c.host, c.operation, c.permission_type)
        why = binding_error(b)
        out.append((ErrorCode.INVALID_REQUEST, why) if why else (0, None))
        if not why:
            good.append(b)
    try:
        await broker.acls.create(good)
    except S2Error as e:
        out = [(ErrorCode.UNKNOWN_SERVER_ERROR, str(e)) if code == 0 else (code, m)
               for code, m in out]
    return CreateAclsResponse(throttle_time_ms=0, results=[
        AclCreationResult(error_code=code, error_message=m) for code, m in out])
