"""Byte-for-byte cross-check against kio, an independent codec generated from the same specs.

Our encoder writes a random message; kio must read exactly those bytes and write them back
identically. Runs for every (API, version, direction) that both codecs know.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings

from broker.protocol import APIS
from tests.protocol.strategies import message

kio_index = pytest.importorskip("kio.index")
kio_serial = pytest.importorskip("kio.serial")


def _kio_class(api_key: int, version: int, kind: str) -> type | None:
    load = kio_index.load_request_schema if kind == "request" else kio_index.load_response_schema
    try:
        return load(api_key, version)
    except kio_index.KioIndexError:
        return None


CASES = [
    (info.api_key, version, kind)
    for info in APIS.values()
    for kind in ("request", "response")
    for version in getattr(info, kind).ENCODERS
    if _kio_class(info.api_key, version, kind) is not None
]
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def test_every_kio_api_key_is_covered() -> None:
    from kio.schema.index import api_key_map

    covered = {k for k, _, _ in CASES}
    ours = set(APIS)
    assert covered == ours & set(api_key_map)
    assert len(covered) == len(ours)  # kio knows every API we serve


@pytest.mark.parametrize(("api_key", "version", "kind"), CASES,
                         ids=[f"{APIS[k].name}-{kind}-v{v}" for k, v, kind in CASES])
def test_kio_reads_and_rewrites_our_bytes(api_key: int, version: int, kind: str) -> None:
    info = APIS[api_key]
    mod = getattr(info, kind)
    kio_cls = _kio_class(api_key, version, kind)
    reader = kio_serial.entity_reader(kio_cls)
    writer = kio_serial.entity_writer(kio_cls)

    @SETTINGS
    @given(body=message(mod.MESSAGE, version, info.is_flexible(version), for_kio=True))
    def check(body: object) -> None:
        parts: list = [bytearray()]
        mod.ENCODERS[version](body, parts)
        ours = b"".join(parts)
        entity, size = reader(ours, 0)
        assert size == len(ours)
        out = io.BytesIO()
        writer(out, entity)
        assert out.getvalue() == ours

    check()


@pytest.mark.parametrize(("kind", "version"), [("request", 1), ("request", 2),
                                               ("response", 0), ("response", 1)])
def test_headers_match_kio(kind: str, version: int) -> None:
    from broker.protocol.messages import _index

    module = _index.request_header if kind == "request" else _index.response_header
    kio_mod = __import__(f"kio.schema.{kind}_header.v{version}.header", fromlist=["x"])
    kio_cls = kio_mod.RequestHeader if kind == "request" else kio_mod.ResponseHeader
    reader = kio_serial.entity_reader(kio_cls)
    writer = kio_serial.entity_writer(kio_cls)

    @SETTINGS
    @given(header=message(module.MESSAGE, version, version == module.FLEXIBLE_MIN_VERSION,
                          for_kio=True))
    def check(header: object) -> None:
        parts: list = [bytearray()]
        module.ENCODERS[version](header, parts)
        ours = b"".join(parts)
        entity, size = reader(ours, 0)
        assert size == len(ours)
        out = io.BytesIO()
        writer(out, entity)
        assert out.getvalue() == ours

    check()


def test_kio_agrees_on_golden_client_frames() -> None:
    from pathlib import Path

    golden = sorted((Path(__file__).parent / "golden").glob("*.hex"))
    assert golden
    for path in golden:
        frame = bytes.fromhex(path.read_text())[4:]
        api_key, version = int.from_bytes(frame[:2], "big"), int.from_bytes(frame[2:4], "big")
        kio_cls = _kio_class(api_key, version, "request")
        if kio_cls is None:  # e.g. Produce v0-v2, which kio does not generate
            continue
        hv = APIS[api_key].request_header_version(version)
        kio_header = __import__(f"kio.schema.request_header.v{hv}.header",
                                fromlist=["x"]).RequestHeader
        header, n = kio_serial.entity_reader(kio_header)(frame, 0)
        body, m = kio_serial.entity_reader(kio_cls)(frame, n)
        assert n + m == len(frame), path.name
        out = io.BytesIO()
        kio_serial.entity_writer(kio_header)(out, header)
        kio_serial.entity_writer(kio_cls)(out, body)
        assert out.getvalue() == frame, path.name
