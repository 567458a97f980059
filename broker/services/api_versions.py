"""ApiVersions: exactly the APIs and versions this broker serves."""
from broker.protocol.messages.api_versions_response import ApiVersion, ApiVersionsResponse

API_KEY = 18
VERSIONS = (0, 4)


async def handle(broker, conn, header, request):
    return ApiVersionsResponse(
        error_code=0,
        api_keys=[ApiVersion(k, lo, hi) for k, lo, hi in broker.api_versions()],
        throttle_time_ms=0)
