"""DescribeUserScramCredentials: the SCRAM users and, per user, each mechanism's
iterations (never a key or a salt): those of `server.kafka_sasl_users` and those set with
AlterUserScramCredentials. Kafka's errors: RESOURCE_NOT_FOUND for a user without SCRAM
credentials, DUPLICATE_RESOURCE for a user asked twice."""
from broker.acls import DESCRIBE
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_user_scram_credentials_response import (
    CredentialInfo,
    DescribeUserScramCredentialsResponse,
    DescribeUserScramCredentialsResult,
)
from broker.sasl import MECHANISM_CODES

API_KEY = 50
VERSIONS = (0, 0)
_CODES = {m: c for c, m in MECHANISM_CODES.items()}


async def handle(broker, conn, header, request):
    if not broker.allowed(conn, DESCRIBE):
        return DescribeUserScramCredentialsResponse(
            throttle_time_ms=0, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
            error_message="Cluster authorization failed.", results=[])
    known = broker.sasl.described()
    # (null or empty: every user, as Kafka reads it)
    names = sorted(known) if not request.users else [u.name for u in request.users]
    results = []
    for name in names:
        if names.count(name) > 1:
            results.append(DescribeUserScramCredentialsResult(
                user=name, error_code=ErrorCode.DUPLICATE_RESOURCE,
                error_message=f"Cannot describe SCRAM credentials for the same user twice "
                              f"in a single request: {name}", credential_infos=[]))
        elif name not in known:
            results.append(DescribeUserScramCredentialsResult(
                user=name, error_code=ErrorCode.RESOURCE_NOT_FOUND,
                error_message=f"Attempt to describe a user credential that does not exist: "
                              f"{name}", credential_infos=[]))
        else:
            results.append(DescribeUserScramCredentialsResult(
                user=name, error_code=0, error_message=None, credential_infos=[
                    CredentialInfo(mechanism=_CODES[m], iterations=i)
                    for m, i in sorted(known[name].items(), key=lambda x: _CODES[x[0]])]))
    return DescribeUserScramCredentialsResponse(throttle_time_ms=0, error_code=0,
                                                error_message=None, results=results)
