"""Frame-level behaviour: headers, registry, ApiVersions rules, zero-copy in and out."""

from __future__ import annotations

import struct

import pytest

from broker.protocol import (
    APIS,
    APIS_BY_NAME,
    EncodeError,
    advertised_versions,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    peek_request_header,
)
from broker.protocol.errors import ErrorCode
from broker.protocol.messages import _index
from broker.protocol.messages import api_versions_response as av
from broker.protocol.messages import fetch_response as fr
from broker.protocol.messages import produce_request as pq
from broker.protocol.messages import produce_response as pp

RequestHeader = _index.request_header.RequestHeader

SERVED = {
    "ApiVersions", "Metadata", "Produce", "Fetch", "ListOffsets", "OffsetForLeaderEpoch",
    "FindCoordinator", "JoinGroup", "SyncGroup", "Heartbeat", "LeaveGroup", "OffsetCommit",
    "OffsetFetch", "OffsetDelete", "DescribeGroups", "ListGroups", "DeleteGroups",
    "ConsumerGroupHeartbeat", "ConsumerGroupDescribe", "InitProducerId", "AddPartitionsToTxn",
    "AddOffsetsToTxn", "EndTxn", "TxnOffsetCommit", "WriteTxnMarkers", "DescribeProducers",
    "DescribeTransactions", "ListTransactions", "CreateTopics", "DeleteTopics",
    "CreatePartitions", "DeleteRecords", "DescribeConfigs", "AlterConfigs",
    "IncrementalAlterConfigs", "DescribeCluster", "DescribeLogDirs", "SaslHandshake",
    "SaslAuthenticate", "DescribeAcls", "CreateAcls", "DeleteAcls",
    "DescribeUserScramCredentials", "AlterUserScramCredentials", "DescribeClientQuotas",
    "AlterClientQuotas", "AlterPartitionReassignments", "ListPartitionReassignments",
    "ElectLeaders", "DescribeTopicPartitions",
}


def test_registry_lists_every_served_api() -> None:
    assert set(APIS_BY_NAME) == SERVED
    produce = APIS_BY_NAME["Produce"]
    assert (produce.api_key, produce.min_version, produce.decodable_min_version) == (0, 3, 0)
    assert produce.flexible_min_version == 9 and produce.is_flexible(9)
    assert not produce.is_flexible(8) and produce.request_header_version(8) == 1
    assert APIS_BY_NAME["SaslHandshake"].flexible_min_version is None


def test_advertised_versions_skip_unstable_latest_and_keep_produce_v0() -> None:
    rows = {k: (lo, hi) for k, lo, hi in advertised_versions()}
    assert rows[0][0] == 0
    for info in APIS.values():
        assert rows[info.api_key][1] == info.max_version - info.latest_version_unstable
    assert any(info.latest_version_unstable for info in APIS.values())


def test_response_header_versions() -> None:
    body = av.ApiVersionsResponse(api_keys=[av.ApiVersion(18, 0, 4)])
    flexible = b"".join(encode_response(9, body, 18, 3))
    # ApiVersions: header v0 even in a flexible version -> error code right after corr id
    assert flexible[4:8] == struct.pack(">i", 9) and flexible[8:10] == b"\x00\x00"
    produce = b"".join(encode_response(9, pp.ProduceResponse(), 0, 9))
    assert produce[8] == 0 and len(produce) == 4 + 4 + 1 + 1 + 4 + 1  # tags, [], throttle, tags
    old = b"".join(encode_response(9, pp.ProduceResponse(), 0, 8))
    assert len(old) == 4 + 4 + 4 + 4  # header v0, int32 count, throttle


def test_old_produce_is_decoded_and_can_be_refused() -> None:
    info = APIS_BY_NAME["Produce"]
    body = pq.ProduceRequest(acks=1, topic_data=[pq.TopicProduceData(
        name="t", partition_data=[pq.PartitionProduceData(0, b"batch")])])
    for version in (0, 1, 2):
        frame = b"".join(encode_request(RequestHeader(0, version, 3, "old"), body))
        assert peek_request_header(frame[4:]) == (0, version, 3)
        header, got = decode_request(frame[4:])
        assert not info.supports(version)
        reply = pp.ProduceResponse(responses=[pp.TopicProduceResponse(
            name=t.name, partition_responses=[pp.PartitionProduceResponse(
                index=p.index, error_code=ErrorCode.UNSUPPORTED_VERSION)
                for p in t.partition_data]) for t in got.topic_data])
        out = b"".join(encode_response(header.correlation_id, reply, 0, version))
        _, back = decode_response(out[4:], 0, version)
        assert back.responses[0].partition_responses[0].error_code == 35


def test_decode_from_bytearray_receive_buffer_is_zero_copy() -> None:
    batch = bytes(range(256)) * 8
    body = pq.ProduceRequest(acks=-1, topic_data=[pq.TopicProduceData(
        name="t", partition_data=[pq.PartitionProduceData(i, batch) for i in range(3)])])
    wire = b"".join(encode_request(RequestHeader(0, 11, 1, None), body))
    receive = bytearray(b"junk" + wire + b"next-frame")
    view = memoryview(receive)[8:4 + len(wire)]
    header, got = decode_request(view)
    assert header.client_id is None
    for part in got.topic_data[0].partition_data:
        assert isinstance(part.records, memoryview) and part.records.obj is receive
        assert part.records == batch
    receive[8 + wire.index(batch[:16]) - 4] ^= 0xFF  # mutate the buffer: the view sees it
    assert got.topic_data[0].partition_data[0].records[0] == batch[0] ^ 0xFF


def test_encode_passes_record_payloads_by_reference() -> None:
    payloads = [bytearray(b"%d" % i) * 1000 for i in range(5)]
    body = fr.FetchResponse(responses=[fr.FetchableTopicResponse(topic="t", partitions=[
        fr.PartitionData(partition_index=i, records=memoryview(p))
        for i, p in enumerate(payloads)])])
    for version in (4, 12, 16):
        parts = encode_response(1, body, 1, version)
        passed = [p for p in parts if isinstance(p, memoryview)]
        assert [p.obj for p in passed] == payloads
        frame = b"".join(parts)
        assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
        _, back = decode_response(frame[4:], 1, version)
        if version < 13:  # v13+ carries topic ids instead of names
            assert back == body


def test_encode_errors_are_typed() -> None:
    with pytest.raises(EncodeError):
        encode_response(1, pp.ProduceResponse(throttle_time_ms=2**31), 0, 9)  # int32 overflow
    with pytest.raises(EncodeError):
        encode_response(1, pq.ProduceRequest(), 0, 9)  # a request is not a response
    with pytest.raises(EncodeError):
        encode_response(1, pp.ProduceResponse(), 0, 99)  # no such version
    with pytest.raises(EncodeError):
        encode_response(1, pp.ProduceResponse(), 999, 0)  # no such api
    with pytest.raises(EncodeError):
        encode_request(RequestHeader(0, 3, 1, "x" * 40_000), pq.ProduceRequest())  # int16 length


def test_records_may_be_a_list_of_buffers_written_back_to_back() -> None:
    stored = [memoryview(bytearray(b"a" * 300)), b"b" * 5, bytearray(b"c" * 70_000)]
    body = fr.FetchResponse(responses=[fr.FetchableTopicResponse(topic="t", partitions=[
        fr.PartitionData(partition_index=0, records=stored),
        fr.PartitionData(partition_index=1, records=[])])])
    for version in (4, 12):
        parts = encode_response(1, body, 1, version)
        assert [p for p in parts if any(p is s for s in stored)] == stored
        frame = b"".join(parts)
        assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
        _, back = decode_response(frame[4:], 1, version)
        first, second = back.responses[0].partitions
        assert first.records == b"".join(stored) and second.records == b""
