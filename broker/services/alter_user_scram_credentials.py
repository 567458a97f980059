"""AlterUserScramCredentials: set or delete a user's SCRAM credential for a mechanism,
kept in metadata (so they survive restarts; the client sends a salted password, never the
password). Set credentials take precedence over the configuration's; deleting one that
was never set is RESOURCE_NOT_FOUND even if the configuration has the user. Kafka's checks:
UNSUPPORTED_SASL_MECHANISM, UNACCEPTABLE_CREDENTIAL (empty name, iterations outside
4096-16384), DUPLICATE_RESOURCE (a user and mechanism twice in one request). One result per
user: its first error, or success."""
import hashlib

from broker.acls import ALTER
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.alter_user_scram_credentials_response import (
    AlterUserScramCredentialsResponse,
    AlterUserScramCredentialsResult,
)
from broker.sasl import (
    HASHES,
    MAX_ITERATIONS,
    MECHANISM_CODES,
    MIN_ITERATIONS,
    salted_credential,
)

API_KEY = 51
VERSIONS = (0, 0)


async def handle(broker, conn, header, request):
    if not broker.allowed(conn, ALTER):
        names = list(dict.fromkeys(op.name for op in [*request.deletions,
                                                       *request.upsertions]))
        return AlterUserScramCredentialsResponse(throttle_time_ms=0, results=[
            AlterUserScramCredentialsResult(
                user=u, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                error_message="Cluster authorization failed.") for u in names])
    errors: dict[str, tuple[int, str]] = {}
    order: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    for op in [*request.deletions, *request.upsertions]:
        if op.name not in order:
            order.append(op.name)
        seen[(op.name, op.mechanism)] = seen.get((op.name, op.mechanism), 0) + 1

    def fail(user, code, message):
        errors.setdefault(user, (code, message))

    for op in [*request.deletions, *request.upsertions]:
        if not op.name:
            fail(op.name, ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty")
        elif op.mechanism not in MECHANISM_CODES:
            fail(op.name, ErrorCode.UNSUPPORTED_SASL_MECHANISM,
                 "Unknown SCRAM mechanism")
        elif seen[(op.name, op.mechanism)] > 1:
            fail(op.name, ErrorCode.DUPLICATE_RESOURCE,
                 "A user credential cannot be altered twice in the same request")
    for op in request.upsertions:
        if op.name not in errors and not MIN_ITERATIONS <= op.iterations <= MAX_ITERATIONS:
            fail(op.name, ErrorCode.UNACCEPTABLE_CREDENTIAL,
                 f"Iterations {op.iterations} not between {MIN_ITERATIONS} and "
                 f"{MAX_ITERATIONS}" if op.iterations > 0 else
                 "Iterations must be positive")
        elif op.name not in errors and \
                len(op.salted_password) != hashlib.new(
                    HASHES[MECHANISM_CODES[op.mechanism]]).digest_size:
            fail(op.name, ErrorCode.UNACCEPTABLE_CREDENTIAL,
                 "Salted password has the wrong length for the mechanism")
    md = broker.store.metadata
    for op in request.deletions:
        if op.name in errors:
            continue
        mech = MECHANISM_CODES[op.mechanism]
        if mech not in broker.sasl.stored or op.name not in broker.sasl.stored[mech]:
            fail(op.name, ErrorCode.RESOURCE_NOT_FOUND,
                 "Attempt to delete a user credential that does not exist")
    for op in request.deletions:
        if op.name not in errors:
            await broker.sasl.remove(md, MECHANISM_CODES[op.mechanism], op.name)
    for op in request.upsertions:
        if op.name not in errors:
            mech = MECHANISM_CODES[op.mechanism]
            await broker.sasl.store(md, mech, op.name, salted_credential(
                bytes(op.salted_password), bytes(op.salt), op.iterations, HASHES[mech]))
    return AlterUserScramCredentialsResponse(throttle_time_ms=0, results=[
        AlterUserScramCredentialsResult(user=u, error_code=errors.get(u, (0, None))[0],
                                        error_message=errors.get(u, (0, None))[1])
        for u in order])
