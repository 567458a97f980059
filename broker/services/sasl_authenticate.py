"""SaslAuthenticate: one SASL/PLAIN exchange (RFC 4616: authzid NUL authcid NUL password)
after a SaslHandshake. A wrong name or password is answered with
SASL_AUTHENTICATION_FAILED and the connection is closed, as Kafka closes it; an
authorization id other than the user name is refused. Sessions do not expire
(session_lifetime_ms 0: no re-authentication, KIP-368)."""
import hmac
import logging

from broker.protocol.errors import ErrorCode
from broker.protocol.messages.sasl_authenticate_response import SaslAuthenticateResponse

API_KEY = 36
VERSIONS = (0, 2)
log = logging.getLogger(__name__)


async def handle(broker, conn, header, request):
    if conn.sasl_mechanism != "PLAIN" or conn.principal:
        return _fail(conn, ErrorCode.ILLEGAL_SASL_STATE,
                     "SaslAuthenticate needs a SaslHandshake first, once per connection")
    user, why = check_plain(broker, conn, request.auth_bytes)
    if user is None:
        return _fail(conn, ErrorCode.SASL_AUTHENTICATION_FAILED, why)
    conn.principal = user
    return SaslAuthenticateResponse(error_code=ErrorCode.NONE, error_message=None,
                                    auth_bytes=b"", session_lifetime_ms=0)


def check_plain(broker, conn, token: bytes) -> tuple[str | None, str]:
    """(user, "") if `token` (authzid NUL authcid NUL password) names a user and the
    password is right; else (None, why)."""
    parts = bytes(token).split(b"\0")
    if len(parts) != 3:
        return None, "Authentication failed: invalid SASL/PLAIN request"
    authzid, user, password = (x.decode("utf-8", "replace") for x in parts)
    expected = broker.config.sasl_plain_users.get(user)
    if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
        log.info("SASL/PLAIN authentication of %r from %s failed", user, conn.peer)
        return None, "Authentication failed: Invalid username or password"
    if authzid and authzid != user:
        return None, ("Authentication failed: Client requested an authorization id that is "
                      "different from username")
    return user, ""


def _fail(conn, code, message):
    conn.close_after_response = True
    return SaslAuthenticateResponse(error_code=code, error_message=message, auth_bytes=b"",
                                    session_lifetime_ms=0)
