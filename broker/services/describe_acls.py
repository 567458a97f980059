"""DescribeAcls: the ACL bindings a filter matches (DESCRIBE on the cluster), grouped by
resource; SECURITY_DISABLED without an authorizer, as Kafka answers (see _acls)."""
from broker.acls import Filter
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_acls_response import (
    AclDescription,
    DescribeAclsResource,
    DescribeAclsResponse,
)
from broker.services._acls import DESCRIBE_CLUSTER, NO_AUTHORIZER

API_KEY = 29
VERSIONS = (1, 3)


async def handle(broker, conn, header, request):
    if not broker.acls.enabled:
        return DescribeAclsResponse(throttle_time_ms=0, error_code=ErrorCode.SECURITY_DISABLED,
                                    error_message=NO_AUTHORIZER, resources=[])
    if not broker.allowed(conn, *DESCRIBE_CLUSTER):
        return DescribeAclsResponse(throttle_time_ms=0,
                                    error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                                    error_message="Cluster authorization failed.", resources=[])
    f = Filter(request.resource_type_filter, request.resource_name_filter,
               request.pattern_type_filter, request.principal_filter, request.host_filter,
               request.operation, request.permission_type)
    grouped: dict[tuple, list] = {}
    for b in broker.acls.describe(f):
        grouped.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
            AclDescription(principal=b.principal, host=b.host, operation=b.operation,
                           permission_type=b.permission))
    return DescribeAclsResponse(throttle_time_ms=0, error_code=0, error_message=None,
                                resources=[DescribeAclsResource(
                                    resource_type=t, resource_name=n, pattern_type=p, acls=a)
                                    for (t, n, p), a in sorted(grouped.items())])
