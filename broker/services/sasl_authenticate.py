"""SaslAuthenticate: one token of the SASL exchange the SaslHandshake started (PLAIN: one
round; SCRAM: two). A failure is answered with SASL_AUTHENTICATION_FAILED and Kafka's
message, and the connection is closed, as Kafka closes it. Sessions do not expire
(session_lifetime_ms 0: no re-authentication, KIP-368)."""
import logging

from broker.protocol.errors import ErrorCode
from broker.protocol.messages.sasl_authenticate_response import SaslAuthenticateResponse
from broker.sasl import AuthFailed

API_KEY = 36
VERSIONS = (0, 2)
log = logging.getLogger(__name__)


async def handle(broker, conn, header, request):
    exchange = conn.sasl_exchange
    if exchange is None or conn.sasl_raw:
        return _fail(conn, ErrorCode.ILLEGAL_SASL_STATE,
                     "SaslAuthenticate needs a SaslHandshake v1 first, once per connection")
    try:
        reply, user = exchange.step(request.auth_bytes)
    except AuthFailed as e:
        log.info("SASL authentication from %s failed: %s", conn.peer, e)
        return _fail(conn, ErrorCode.SASL_AUTHENTICATION_FAILED, str(e))
    if user is not None:
        conn.principal, conn.sasl_exchange = user, None
    return SaslAuthenticateResponse(error_code=ErrorCode.NONE, error_message=None,
                                    auth_bytes=reply, session_lifetime_ms=0)


def _fail(conn, code, message):
    conn.close_after_response = True
    conn.sasl_exchange = None
    return SaslAuthenticateResponse(error_code=code, error_message=message, auth_bytes=b"",
                                    session_lifetime_ms=0)
