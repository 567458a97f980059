"""DeleteAcls: remove the ACL bindings each filter matches (ALTER on the cluster) and
return them; SECURITY_DISABLED without an authorizer, as Kafka answers (see _acls)."""
from broker.acls import Filter
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.delete_acls_response import (
    DeleteAclsFilterResult,
    DeleteAclsMatchingAcl,
    DeleteAclsResponse,
)
from broker.services._acls import ALTER_CLUSTER, NO_AUTHORIZER
from s2core.errors import S2Error

API_KEY = 31
VERSIONS = (1, 3)


async def handle(broker, conn, header, request):
    def same(code, message):
        return DeleteAclsResponse(throttle_time_ms=0, filter_results=[
            DeleteAclsFilterResult(error_code=code, error_message=message, matching_acls=[])
            for _ in request.filters])
    if not broker.acls.enabled:
        return same(ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    if not broker.allowed(conn, *ALTER_CLUSTER):
        return same(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
    out = []
    for f in request.filters:
        try:
            gone = await broker.acls.delete(Filter(
                f.resource_type_filter, f.resource_name_filter, f.pattern_type_filter,
                f.principal_filter, f.host_filter, f.operation, f.permission_type))
        except S2Error as e:
            out.append(DeleteAclsFilterResult(error_code=ErrorCode.UNKNOWN_SERVER_ERROR,
                                              error_message=str(e), matching_acls=[]))
            continue
        out.append(DeleteAclsFilterResult(error_code=0, error_message=None, matching_acls=[
            DeleteAclsMatchingAcl(error_code=0, error_message=None,
                                  resource_type=b.resource_type,
                                  resource_name=b.resource_name, pattern_type=b.pattern_type,
                                  principal=b.principal, host=b.host, operation=b.operation,
                                  permission_type=b.permission) for b in gone]))
    return DeleteAclsResponse(throttle_time_ms=0, filter_results=out)
