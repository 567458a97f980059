"""Every generated message version survives encode -> decode -> encode unchanged."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.protocol import APIS, decode_request, decode_response, encode_request, encode_response
from broker.protocol.messages import _index
from tests.protocol.strategies import message

CASES = [
    (info.api_key, version, kind)
    for info in APIS.values()
    for kind in ("request", "response")
    for version in getattr(info, kind).DECODERS
]
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _roundtrip(api_key: int, version: int, kind: str, body: object, corr: int) -> None:
    info = APIS[api_key]
    if kind == "request":
        header = _index.request_header.RequestHeader(api_key, version, corr, "client-1")
        parts = encode_request(header, body)
        frame = b"".join(parts)
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
        got_header, got = decode_request(memoryview(bytearray(frame))[4:])
        assert got_header.correlation_id == corr
        again = b"".join(encode_request(got_header, got))
    else:
        parts = encode_response(corr, body, api_key, version)
        frame = b"".join(parts)
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
        got_header, got = decode_response(memoryview(frame)[4:], api_key, version)
        assert got_header.correlation_id == corr
        again = b"".join(encode_response(corr, got, api_key, version))
    assert got == body, (info.name, version, kind)
    assert again == frame


@pytest.mark.parametrize(("api_key", "version", "kind"), CASES,
                         ids=[f"{APIS[k].name}-{kind}-v{v}" for k, v, kind in CASES])
def test_roundtrip(api_key: int, version: int, kind: str) -> None:
    info = APIS[api_key]
    cls = getattr(info, f"{kind}_class")
    strategy = message(cls, version, info.is_flexible(version))

    @SETTINGS
    @given(body=strategy, corr=st.integers(-(2**31), 2**31 - 1))
    def check(body: object, corr: int) -> None:
        _roundtrip(api_key, version, kind, body, corr)

    check()


def test_every_listed_version_has_codecs() -> None:
    for info in APIS.values():
        for mod in (info.request, info.response):
            expected = set(range(mod.DECODABLE_VERSIONS[0], mod.DECODABLE_VERSIONS[1] + 1))
            assert set(mod.DECODERS) == expected == set(mod.ENCODERS)
            assert mod.VALID_VERSIONS[1] == mod.DECODABLE_VERSIONS[1]


@pytest.mark.parametrize(("module", "version"), [
    (_index.request_header, v) for v in _index.request_header.DECODERS
] + [(_index.response_header, v) for v in _index.response_header.DECODERS])
def test_header_roundtrip(module: object, version: int) -> None:
    flexible = version >= module.FLEXIBLE_MIN_VERSION  # type: ignore[attr-defined]

    @SETTINGS
    @given(header=message(module.MESSAGE, version, flexible))  # type: ignore[attr-defined]
    def check(header: object) -> None:
        parts: list = [bytearray()]
        module.ENCODERS[version](header, parts)  # type: ignore[attr-defined]
        data = b"".join(parts)
        got, pos = module.DECODERS[version](memoryview(data), 0)  # type: ignore[attr-defined]
        assert (got, pos) == (header, len(data))

    check()
