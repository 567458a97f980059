"""Request frames captured from real clients decode and re-encode byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.protocol import APIS, decode_request, encode_request
from broker.protocol.records import iter_records, split_batches

GOLDEN = Path(__file__).resolve().parent / "golden"
FILES = sorted(GOLDEN.glob("*.hex"))
CLIENTS = ("confluent", "kafkapython", "aiokafka", "kcat")
APIS_CAPTURED = ("ApiVersions", "Metadata", "Produce", "Fetch", "JoinGroup")


def test_every_client_and_api_was_captured() -> None:
    names = {p.name.split("_v")[0] for p in FILES}
    assert names == {f"{c}_{a}" for c in CLIENTS for a in APIS_CAPTURED}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_frame_roundtrip(path: Path) -> None:
    raw = bytes.fromhex(path.read_text())
    assert int.from_bytes(raw[:4], "big") == len(raw) - 4
    frame = memoryview(bytearray(raw))[4:]  # as a server sees it: a view of its read buffer
    header, body = decode_request(frame)
    info = APIS[header.request_api_key]
    assert path.name.split("_")[1] == info.name
    assert path.stem.endswith(f"_v{header.request_api_version}")
    assert b"".join(encode_request(header, body)) == raw


def test_produce_records_are_views_of_the_frame_and_valid_batches() -> None:
    for path in GOLDEN.glob("*_Produce_v*.hex"):
        buf = bytearray(bytes.fromhex(path.read_text()))
        frame = memoryview(buf)[4:]
        _, body = decode_request(frame)
        (topic,) = body.topic_data
        (part,) = topic.partition_data
        records = part.records
        assert isinstance(records, memoryview) and records.obj is buf
        batches = split_batches(records, check_offsets=True)
        assert len(batches) == 1
        values = [bytes(r.value) for r in iter_records(records, batches[0][0])]
        assert values == [b"value"], path.name
        parts = encode_request(*decode_request(frame))
        assert any(p.obj is buf for p in parts if isinstance(p, memoryview))
