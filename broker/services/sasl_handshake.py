"""SaslHandshake: the client names its SASL mechanism, one of those the listener offers
(`server.kafka_sasl_mechanisms`) on a listener with users (`server.kafka_sasl_users`);
elsewhere the answer is ILLEGAL_SASL_STATE, as Kafka's on a listener without SASL.

After v1 the exchange travels in SaslAuthenticate requests; after v0 (Kafka clients before
1.0) as raw size-prefixed tokens, which the connection reads next (Connection._raw_sasl).
librdkafka up to 2.0 (Debian's kcat) will not authenticate with a broker that does not
list v0, even though it then uses v1."""
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.sasl_handshake_response import SaslHandshakeResponse

API_KEY = 17
VERSIONS = (0, 1)


async def handle(broker, conn, header, request):
    users = getattr(conn, "sasl", broker.sasl)  # (the listener's)
    offered = users.mechanisms
    if not offered or conn.sasl_exchange is not None or conn.principal:
        return SaslHandshakeResponse(error_code=ErrorCode.ILLEGAL_SASL_STATE, mechanisms=[])
    if request.mechanism not in offered:
        return SaslHandshakeResponse(error_code=ErrorCode.UNSUPPORTED_SASL_MECHANISM,
                                     mechanisms=offered)
    conn.sasl_exchange = users.start(request.mechanism)
    conn.sasl_raw = header.request_api_version == 0
    return SaslHandshakeResponse(error_code=ErrorCode.NONE, mechanisms=offered)
