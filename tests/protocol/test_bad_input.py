"""Malformed input: always a typed DecodeError, fast, with no large allocation."""

from __future__ import annotations

import random
import struct
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.protocol import (
    DecodeError,
    FrameTooLargeError,
    InvalidLengthError,
    InvalidStringError,
    InvalidVarintError,
    TrailingBytesError,
    TruncatedError,
    UnknownApiKeyError,
    UnsupportedVersionError,
    decode_request,
    decode_response,
    encode_api_versions_unsupported,
    encode_request,
    frame_size,
)
from broker.protocol.errors import ErrorCode
from broker.protocol.messages import _index
from broker.protocol.messages.metadata_request import MetadataRequest, MetadataRequestTopic
from tests.protocol import fuzz

RequestHeader = _index.request_header.RequestHeader
CORPUS = fuzz.build_corpus(0)
FRAMES = [entry[3] for entry in CORPUS]


def _metadata_frame(version: int, topics: list[str]) -> bytearray:
    body = MetadataRequest(topics=[MetadataRequestTopic(name=t) for t in topics])
    return bytearray(b"".join(encode_request(RequestHeader(3, version, 5, "c"), body))[4:])


def test_frame_size_prefix() -> None:
    assert frame_size(b"\x00\x00\x01") is None
    assert frame_size(b"\x00\x00\x01\x00rest") == 256
    with pytest.raises(FrameTooLargeError):
        frame_size(struct.pack(">i", -1))
    with pytest.raises(FrameTooLargeError):
        frame_size(struct.pack(">i", 2**31 - 1))
    with pytest.raises(FrameTooLargeError):
        frame_size(struct.pack(">i", 1025), max_size=1024)


def test_every_truncation_of_every_corpus_request_is_typed() -> None:
    for kind, _key, _version, frame in CORPUS:
        if kind != "request":
            continue
        for cut in range(len(frame)):
            with pytest.raises(DecodeError):
                decode_request(memoryview(frame)[:cut])


def test_truncated_response() -> None:
    for kind, key, version, frame in CORPUS:
        if kind == "response":
            with pytest.raises(TruncatedError):
                decode_response(frame[:-1], key, version)


def test_trailing_bytes() -> None:
    frame = _metadata_frame(12, ["a"]) + b"\x00"
    with pytest.raises(TrailingBytesError):
        decode_request(frame)


def test_unknown_api_key_and_version_carry_correlation_id() -> None:
    frame = bytearray(_metadata_frame(4, ["a"]))
    struct.pack_into(">h", frame, 0, 999)
    with pytest.raises(UnknownApiKeyError) as e:
        decode_request(frame)
    assert (e.value.api_key, e.value.correlation_id) == (999, 5)
    struct.pack_into(">hh", frame, 0, 3, 99)
    with pytest.raises(UnsupportedVersionError) as u:
        decode_request(frame)
    assert (u.value.api_key, u.value.api_version, u.value.correlation_id) == (3, 99, 5)


def test_too_new_api_versions_gets_v0_unsupported_reply() -> None:
    frame = struct.pack(">hhih", 18, 77, 1234, 1) + b"c" + b"\x00" * 6
    with pytest.raises(UnsupportedVersionError) as e:
        decode_request(frame)
    reply = b"".join(encode_api_versions_unsupported(e.value.correlation_id))
    header, body = decode_response(reply[4:], 18, 0)
    assert header.correlation_id == 1234
    assert body.error_code == ErrorCode.UNSUPPORTED_VERSION
    keys = {k.api_key: (k.min_version, k.max_version) for k in body.api_keys}
    assert keys[18] == (0, 4) and keys[0] == (0, 13)
    # header v0 (no tagged fields), then error code, then the int32 array count
    assert reply[8:10] == b"\x00\x23" and reply[10:14] == struct.pack(">i", len(keys))
    only = b"".join(encode_api_versions_unsupported(1, [(18, 0, 4)]))
    assert decode_response(only[4:], 18, 0)[1].api_keys[0].max_version == 4


def test_negative_and_enormous_counts() -> None:
    # Metadata v4: 11-byte header (client id "c"), then the int32 topic count.
    frame = _metadata_frame(4, ["abc"])
    assert frame[11:15] == struct.pack(">i", 1)
    for bad in (0x7FFFFFFF, -5):
        struct.pack_into(">i", frame, 11, bad)
        with pytest.raises(InvalidLengthError):
            decode_request(frame)
    # Metadata v12: 12-byte header v2, then a compact count (n + 1 = 2) -> 2**31 - 1 elements.
    flex = _metadata_frame(12, ["abc"])
    assert flex[12] == 2
    flex[12:13] = b"\xff\xff\xff\xff\x07"
    with pytest.raises(InvalidLengthError):
        decode_request(flex)


def test_enormous_string_length_and_invalid_varint() -> None:
    frame = _metadata_frame(4, ["abc"])
    at = frame.index(b"\x00\x03abc")
    struct.pack_into(">h", frame, at, 0x7FFF)
    with pytest.raises(TruncatedError):
        decode_request(frame)
    flex = _metadata_frame(12, ["abc"])
    at = flex.index(b"\x04abc")
    bad = flex[:at] + b"\xff\xff\xff\xff\xff\xff\x01" + flex[at + 4:]
    with pytest.raises(InvalidVarintError):
        decode_request(bad)


def test_invalid_utf8() -> None:
    frame = _metadata_frame(4, ["abc"])
    at = frame.index(b"abc")
    frame[at] = 0xFF
    with pytest.raises(InvalidStringError):
        decode_request(frame)


def test_null_for_non_nullable_field() -> None:
    frame = _metadata_frame(4, ["abc"])
    at = frame.index(b"\x00\x03abc")
    struct.pack_into(">h", frame, at, -1)
    with pytest.raises(InvalidLengthError):
        decode_request(frame[:at + 2])


def test_huge_lengths_do_not_allocate() -> None:
    rng = random.Random(5)
    tracemalloc.start()
    try:
        for _ in range(3000):
            data = bytearray(rng.choice(FRAMES))
            if len(data) < 12:
                continue
            pos = rng.randrange(8, len(data) - 3)
            struct.pack_into(">i", data, pos, rng.choice((0x7FFFFFFF, 0x10000000, -2)))
            try:
                decode_request(data)
            except DecodeError:
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(entry=st.sampled_from(CORPUS), seed=st.integers(0, 2**32))
def test_fuzz_mutations_only_raise_decode_errors(entry: tuple, seed: int) -> None:
    kind, api_key, version, frame = entry
    data = fuzz.mutate(frame, random.Random(seed), FRAMES)
    t0 = time.perf_counter()
    ok, message = fuzz.run_one(lambda: fuzz.check_frame(kind, api_key, version, data))
    assert ok, message
    assert time.perf_counter() - t0 < 0.5


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.sampled_from(fuzz.batch_corpus()), seed=st.integers(0, 2**32),
       fix=st.booleans())
def test_fuzz_record_batches_only_raise_decode_errors(batch: bytes, seed: int,
                                                      fix: bool) -> None:
    data = fuzz.mutate(batch, random.Random(seed), [batch])
    if fix:
        data = fuzz.fix_batch(data)
    ok, message = fuzz.run_one(lambda: fuzz.check_batch(data))
    assert ok, message


def test_fuzzer_reports_non_decode_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise KeyError("bug")
    monkeypatch.setattr(fuzz, "check_frame", broken)
    lines: list[str] = []
    assert fuzz.fuzz(50, 1, report=lines.append) > 0
    assert any("KeyError" in line for line in lines)
