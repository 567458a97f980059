"""Bad input on raw sockets, encoded with the repo's codec: each gets Kafka's exact error code
or a clean close, the broker keeps serving other connections, and acked data survives."""
from __future__ import annotations

import socket
import struct
import time
import uuid

import pytest

from broker.protocol.errors import ErrorCode
from broker.protocol.frames import RequestHeader, decode_response, encode_request
from broker.protocol.messages.api_versions_request import ApiVersionsRequest
from broker.protocol.messages.create_topics_request import CreatableTopic, CreateTopicsRequest
from broker.protocol.messages.fetch_request import FetchPartition, FetchRequest, FetchTopic
from broker.protocol.messages.metadata_request import MetadataRequest, MetadataRequestTopic
from broker.protocol.messages.produce_request import (
    PartitionProduceData, ProduceRequest, TopicProduceData,
)
from broker.protocol.records import (
    Record, batch_crc, build_batch, build_control_batch, iter_records, split_batches,
)

API_VERSIONS, PRODUCE, FETCH, METADATA, CREATE_TOPICS = 18, 0, 1, 3, 19


class Wire:
    """A blocking Kafka connection that speaks through the repo's codec (test client)."""

    def __init__(self, bootstrap: str, timeout: float = 15) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.corr = 0

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, api_key: int, version: int, body) -> int:
        self.corr += 1
        header = RequestHeader(api_key, version, self.corr, "compat-wire")
        self.sock.sendall(b"".join(bytes(p) for p in encode_request(header, body)))
        return self.corr

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the broker")
            buf += chunk
        return bytes(buf)

    def read_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._read(4))
        return self._read(size)

    def receive(self, api_key: int, version: int, corr: int):
        header, body = decode_response(self.read_frame(), api_key, version)
        assert header.correlation_id == corr
        return body

    def call(self, api_key: int, version: int, body):
        return self.receive(api_key, version, self.send(api_key, version, body))

    def closed_by_peer(self, timeout: float = 10) -> bool:
        """True once the broker has closed the connection (EOF or reset), within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def produce_request(topic: str, batch: bytes, partition: int = 0, acks: int = -1):
    return ProduceRequest(transactional_id=None, acks=acks, timeout_ms=10_000, topic_data=[
        TopicProduceData(name=topic, partition_data=[
            PartitionProduceData(index=partition, records=batch)])])


def produce_code(w: Wire, topic: str, batch: bytes, version: int = 9) -> tuple[int, int]:
    resp = w.call(PRODUCE, version, produce_request(topic, batch))
    p = resp.responses[0].partition_responses[0]
    return p.error_code, p.base_offset


def batch_of(values: list[bytes], **kw) -> bytearray:
    now = int(time.time() * 1000)
    return build_batch([Record(i, now, None, v) for i, v in enumerate(values)], **kw)


def create_topic(w: Wire, name: str, partitions: int = 1) -> None:
    resp = w.call(CREATE_TOPICS, 5, CreateTopicsRequest(topics=[CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=1, assignments=[],
        configs=[])], timeout_ms=10_000, validate_only=False))
    assert resp.topics[0].error_code == 0, resp.topics[0].error_message


def fetch_values(w: Wire, topic: str, offset: int = 0, partition: int = 0) -> list[bytes]:
    resp = w.call(FETCH, 11, FetchRequest(
        replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=10_000_000, isolation_level=0,
        session_id=0, session_epoch=-1, topics=[FetchTopic(topic=topic, partitions=[
            FetchPartition(partition=partition, current_leader_epoch=-1, fetch_offset=offset,
                           log_start_offset=-1, partition_max_bytes=10_000_000)])],
        forgotten_topics_data=[], rack_id=""))
    p = resp.responses[0].partitions[0]
    assert p.error_code == 0
    raw = bytes(p.records or b"")
    return [bytes(r.value) for pos, _ in split_batches(raw, allow_partial_tail=True)
            for r in iter_records(raw, pos) if r.offset >= offset]


@pytest.fixture(scope="module")
def seeded(broker):
    """A topic with acked data, checked again after every bad input."""
    topic = f"bad-input-seed-{uuid.uuid4().hex[:8]}"
    w = Wire(broker.bootstrap)
    create_topic(w, topic)
    assert produce_code(w, topic, batch_of([b"one", b"two", b"three"])) == (0, 0)
    w.close()
    return topic


@pytest.fixture
def survives(broker, seeded):
    """After the test: a new connection works and the acked records are unchanged."""
    yield
    w = Wire(broker.bootstrap)
    try:
        assert fetch_values(w, seeded)[:3] == [b"one", b"two", b"three"]
    finally:
        w.close()


def _header(api_key: int, version: int, corr: int, client_id: bytes = b"bad") -> bytes:
    return struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


@pytest.mark.parametrize("prefix", [
    pytest.param(struct.pack(">i", 3) + b"abc", id="size-below-header"),
    pytest.param(struct.pack(">i", -1), id="negative-size"),
    pytest.param(struct.pack(">i", 200 * 1024 * 1024) + b"x" * 1024, id="over-max-frame"),
    pytest.param(_frame(_header(METADATA, 12, 1) + b"\xff\xff\xff"), id="garbage-body"),
    pytest.param(_frame(b"\x00\x03\x00\x04\x00"), id="truncated-header"),
    pytest.param(_frame(_header(999, 0, 1)), id="unknown-api-key"),
    pytest.param(_frame(_header(METADATA, 99, 1)), id="metadata-v99"),
    pytest.param(_frame(_header(FETCH, 17, 1) + bytes(64)), id="fetch-version-not-served"),
])
def test_bad_frame_closes_connection_cleanly(broker, survives, prefix):
    bystander = Wire(broker.bootstrap)
    w = Wire(broker.bootstrap)
    try:
        w.send_raw(prefix)
        assert w.closed_by_peer(), "the broker kept the connection open"
        # another connection, open all along, is still served
        resp = bystander.call(API_VERSIONS, 3, ApiVersionsRequest(
            client_software_name="compat", client_software_version="1"))
        assert resp.error_code == 0
    finally:
        w.close()
        bystander.close()


def test_frame_split_across_many_writes_is_served(broker, survives):
    w = Wire(broker.bootstrap)
    try:
        header = RequestHeader(API_VERSIONS, 3, 7, "slow")
        data = b"".join(bytes(p) for p in encode_request(header, ApiVersionsRequest(
            client_software_name="compat", client_software_version="1")))
        for i in range(len(data)):
            w.send_raw(data[i:i + 1])
        resp = w.receive(API_VERSIONS, 3, 7)
        assert resp.error_code == 0
    finally:
        w.close()


def test_api_versions_too_new_gets_v0_unsupported_version_reply(broker, survives):
    w = Wire(broker.bootstrap)
    try:
        w.send_raw(_frame(_header(API_VERSIONS, 99, 41) + b"\x00" * 8))
        header, body = decode_response(w.read_frame(), API_VERSIONS, 0)
        assert header.correlation_id == 41
        assert body.error_code == ErrorCode.UNSUPPORTED_VERSION
        ranges = {k.api_key: (k.min_version, k.max_version) for k in body.api_keys}
        assert ranges[API_VERSIONS] == (0, 4)
        assert ranges[PRODUCE][1] >= 9
        # the connection stays usable: the client retries with a version we serve
        resp = w.call(API_VERSIONS, 3, ApiVersionsRequest(client_software_name="compat",
                                                          client_software_version="1"))
        assert resp.error_code == 0
        assert {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys} == ranges
    finally:
        w.close()


@pytest.mark.parametrize("version", [0, 1, 2])
def test_produce_v0_to_v2_get_unsupported_version(broker, survives, seeded, version):
    w = Wire(broker.bootstrap)
    try:
        resp = w.call(PRODUCE, version, produce_request(seeded, batch_of([b"old"])))
        (t,) = resp.responses
        assert t.name == seeded
        assert [(p.index, p.error_code, p.base_offset) for p in t.partition_responses] == \
            [(0, ErrorCode.UNSUPPORTED_VERSION, -1)]
        assert fetch_values(w, seeded) == [b"one", b"two", b"three"]
    finally:
        w.close()


def test_corrupt_crc_is_corrupt_message_and_nothing_is_stored(broker, survives, topic_name):
    w = Wire(broker.bootstrap)
    try:
        create_topic(w, topic_name)
        bad = batch_of([b"a", b"b"])
        bad[-1] ^= 0xFF  # a payload byte: the CRC-32C no longer matches
        assert produce_code(w, topic_name, bytes(bad)) == (ErrorCode.CORRUPT_MESSAGE, -1)
        assert produce_code(w, topic_name, bytes(batch_of([b"good"]))) == (0, 0)
        assert fetch_values(w, topic_name) == [b"good"]
    finally:
        w.close()


def test_truncated_batch_is_corrupt_message(broker, survives, topic_name):
    w = Wire(broker.bootstrap)
    try:
        create_topic(w, topic_name)
        good = bytes(batch_of([b"a", b"b"]))
        assert produce_code(w, topic_name, good[:-3]) == (ErrorCode.CORRUPT_MESSAGE, -1)
        assert produce_code(w, topic_name, good + good[:30]) == (ErrorCode.CORRUPT_MESSAGE, -1)
        assert fetch_values(w, topic_name) == []
    finally:
        w.close()


def _with_count(batch: bytearray, count: int) -> bytes:
    out = bytearray(batch)
    struct.pack_into(">i", out, 57, count)  # recordCount, inside the CRC-covered part
    struct.pack_into(">I", out, 17, batch_crc(out, 0, len(out)))
    return bytes(out)


@pytest.mark.parametrize("count", [1, 3, 0])
def test_wrong_record_count_is_invalid_record(broker, survives, topic_name, count):
    w = Wire(broker.bootstrap)
    try:
        create_topic(w, topic_name)
        bad = _with_count(batch_of([b"a", b"b"]), count)
        assert produce_code(w, topic_name, bad) == (ErrorCode.INVALID_RECORD, -1)
    finally:
        w.close()


def test_wrong_record_count_is_refused_and_nothing_is_stored(broker, survives, topic_name):
    w = Wire(broker.bootstrap)
    try:
        create_topic(w, topic_name)
        for count in (1, 3, 0):
            code, offset = produce_code(w, topic_name, _with_count(batch_of([b"a", b"b"]),
                                                                    count))
            assert offset == -1 and code in (ErrorCode.INVALID_RECORD,
                                             ErrorCode.CORRUPT_MESSAGE)
        assert fetch_values(w, topic_name) == []
    finally:
        w.close()


def test_client_control_batch_is_invalid_record(broker, survives, topic_name):
    w = Wire(broker.bootstrap)
    try:
        create_topic(w, topic_name)
        ctrl = build_control_batch(commit=True, producer_id=1000, producer_epoch=0,
                                   coordinator_epoch=0, offset=0,
                                   timestamp=int(time.time() * 1000))
        assert produce_code(w, topic_name, bytes(ctrl)) == (ErrorCode.INVALID_RECORD, -1)
        assert fetch_values(w, topic_name) == []
    finally:
        w.close()


def test_acks0_produce_error_closes_connection(broker, survives, topic_name):
    w = Wire(broker.bootstrap)
    try:
        create_topic(w, topic_name)
        bad = batch_of([b"a"])
        bad[-1] ^= 0xFF
        w.send(PRODUCE, 9, produce_request(topic_name, bytes(bad), acks=0))
        assert w.closed_by_peer(timeout=2)
    finally:
        w.close()


def test_unknown_topic_with_auto_create_off(tmp_path):
    from brokerproc import start_broker
    b = start_broker(str(tmp_path / "data"), extra=["--set", "kafka.auto_create_topics=false"])
    try:
        w = Wire(b.bootstrap)
        create_topic(w, "exists")
        assert produce_code(w, "exists", bytes(batch_of([b"kept"]))) == (0, 0)
        assert produce_code(w, "missing", bytes(batch_of([b"x"]))) == \
            (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)
        assert produce_code(w, "exists", bytes(batch_of([b"x"]))) == (0, 1)
        md = w.call(METADATA, 12, MetadataRequest(
            topics=[MetadataRequestTopic(topic_id=bytes(16), name="missing")],
            allow_auto_topic_creation=True, include_topic_authorized_operations=False))
        assert [(t.name, t.error_code) for t in md.topics] == \
            [("missing", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
        md = w.call(METADATA, 12, MetadataRequest(topics=None, allow_auto_topic_creation=True,
                                                  include_topic_authorized_operations=False))
        assert [t.name for t in md.topics] == ["exists"]
        # partitions past the end of a topic are unknown too
        resp = w.call(PRODUCE, 9, produce_request("exists", bytes(batch_of([b"y"])),
                                                  partition=5))
        assert resp.responses[0].partition_responses[0].error_code == \
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert fetch_values(w, "exists") == [b"kept", b"x"]
        w.close()
    finally:
        assert b.stop() == 0
