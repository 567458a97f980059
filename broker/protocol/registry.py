"""API key -> what the codec knows about it (names, versions, message classes, codecs).

Built from the generated index, so it can only list APIs that have generated codecs.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from broker.protocol.messages import _index

API_VERSIONS_KEY = 18


@dataclass(frozen=True, slots=True)
class ApiInfo:
    """One Kafka API as generated from its request/response specs.

    ``min_version``/``max_version`` are the spec's validVersions (``deprecated_versions`` still
    work but clients should move off them); ``decodable_min_version`` may
    be lower (Produce v0-v2: decoded only so they can be answered with UNSUPPORTED_VERSION, and
    advertised because librdkafka requires it, see KAFKA-18659).
    """

    api_key: int
    name: str
    min_version: int
    max_version: int
    decodable_min_version: int
    flexible_min_version: int | None
    latest_version_unstable: bool
    deprecated_versions: tuple[int, int] | None
    request: ModuleType
    response: ModuleType

    @property
    def max_stable_version(self) -> int:
        """Highest version safe to advertise (the latest may be marked unstable)."""
        return self.max_version - 1 if self.latest_version_unstable else self.max_version

    @property
    def request_class(self) -> type:
        return self.request.MESSAGE

    @property
    def response_class(self) -> type:
        return self.response.MESSAGE

    def is_flexible(self, version: int) -> bool:
        return self.flexible_min_version is not None and version >= self.flexible_min_version

    def supports(self, version: int) -> bool:
        """True if ``version`` is a version the broker should serve (not just decode)."""
        return self.min_version <= version <= self.max_version

    def request_header_version(self, version: int) -> int:
        return 2 if self.is_flexible(version) else 1

    def response_header_version(self, version: int) -> int:
        # ApiVersions responses always use header v0, so that a client that does not yet know
        # the broker's versions can parse them.
        if self.api_key == API_VERSIONS_KEY:
            return 0
        return 1 if self.is_flexible(version) else 0


def _build() -> dict[int, ApiInfo]:
    apis = {}
    for api_key, name, req, resp in _index.APIS:
        assert req.API_KEY == resp.API_KEY == api_key
        assert req.VALID_VERSIONS == resp.VALID_VERSIONS, name
        apis[api_key] = ApiInfo(
            api_key=api_key,
            name=name,
            min_version=req.VALID_VERSIONS[0],
            max_version=req.VALID_VERSIONS[1],
            decodable_min_version=req.DECODABLE_VERSIONS[0],
            flexible_min_version=req.FLEXIBLE_MIN_VERSION,
            latest_version_unstable=req.LATEST_VERSION_UNSTABLE,
            deprecated_versions=req.DEPRECATED_VERSIONS,
            request=req,
            response=resp,
        )
    return apis


#: Every API with a generated codec, by API key.
APIS: dict[int, ApiInfo] = _build()
#: The same, by name ("Produce", "Fetch", ...).
APIS_BY_NAME: dict[str, ApiInfo] = {info.name: info for info in APIS.values()}


def advertised_versions(api_keys: list[int] | None = None) -> list[tuple[int, int, int]]:
    """(api_key, min, max) triples for an ApiVersions response.

    The minimum is the lowest decodable version (Produce advertises 0, as Kafka 4 does); the
    maximum skips a latest version the spec marks unstable.
    """
    keys = sorted(APIS) if api_keys is None else api_keys
    return [(k, APIS[k].decodable_min_version, APIS[k].max_stable_version) for k in keys]
