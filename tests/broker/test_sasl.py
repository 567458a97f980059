"""SASL/PLAIN on the Kafka listener, frame by frame over a real socket: SaslHandshake v1 and
SaslAuthenticate, the raw tokens that follow a SaslHandshake v0, and what is refused
(other mechanisms, wrong passwords, requests before authentication, SASL on a listener
without users)."""
from __future__ import annotations

import asyncio
import struct

import pytest

from broker.kafka import Broker, BrokerConfig
from broker.protocol import decode_response, encode_request
from broker.protocol.errors import ErrorCode
from broker.protocol.messages import _index
from broker.protocol.messages.metadata_request import MetadataRequest
from broker.protocol.messages.sasl_authenticate_request import SaslAuthenticateRequest
from broker.protocol.messages.sasl_handshake_request import SaslHandshakeRequest
from broker.server import KafkaServer
from s2core.channel import ChannelConfig
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.store import ChannelSpec, StreamStore

USERS = {"alice": "alice-secret"}


async def _listener(users):
    store = await StreamStore.open(MemoryMetadataStore(), MemoryObjectStore("segments"), [
        ChannelSpec("ch0", [MemoryObjectStore("r0")], 1, ChannelConfig())])
    b = Broker(store, BrokerConfig(basin="test-basin", sasl_plain_users=users))
    await b.start()
    server = KafkaServer(b)
    host, port = await server.start("127.0.0.1", 0)
    return store, b, server, port


@pytest.fixture
async def listener():
    store, b, server, port = await _listener(USERS)
    yield port
    await server.stop()
    await b.stop()
    await store.close()


@pytest.fixture
async def open_listener():
    store, b, server, port = await _listener({})
    yield port
    await server.stop()
    await b.stop()
    await store.close()


class Client:
    def __init__(self, reader, writer) -> None:
        self.reader, self.writer, self.corr = reader, writer, 0

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(self, api_key: int, version: int, request):
        self.corr += 1
        header = _index.request_header.RequestHeader(api_key, version, self.corr, "t")
        self.writer.write(b"".join(encode_request(header, request)))
        frame = await self.frame()
        _, resp = decode_response(memoryview(frame), api_key, version)
        return resp

    async def frame(self) -> bytes:
        (size,) = struct.unpack(">i", await self.reader.readexactly(4))
        return await self.reader.readexactly(size)

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    async def metadata(self):
        return await self.call(3, 1, MetadataRequest(topics=[]))


async def test_handshake_and_authenticate(listener):
    c = await Client.connect(listener)
    r = await c.call(17, 1, SaslHandshakeRequest(mechanism="SCRAM-SHA-256"))
    assert (r.error_code, r.mechanisms) == (ErrorCode.UNSUPPORTED_SASL_MECHANISM, ["PLAIN"])
    r = await c.call(17, 1, SaslHandshakeRequest(mechanism="PLAIN"))
    assert (r.error_code, r.mechanisms) == (ErrorCode.NONE, ["PLAIN"])
    r = await c.call(36, 2, SaslAuthenticateRequest(auth_bytes=b"\0alice\0alice-secret"))
    assert (r.error_code, r.error_message, r.session_lifetime_ms) == (ErrorCode.NONE, None, 0)
    assert (await c.metadata()).brokers, "served once authenticated"
    r = await c.call(17, 1, SaslHandshakeRequest(mechanism="PLAIN"))
    assert r.error_code == ErrorCode.ILLEGAL_SASL_STATE, "one authentication per connection"


@pytest.mark.parametrize("token,why", [
    (b"\0alice\0wrong", "Authentication failed: Invalid username or password"),
    (b"\0mallory\0alice-secret", "Authentication failed: Invalid username or password"),
    (b"bob\0alice\0alice-secret", "Authentication failed: Client requested an authorization "
                                  "id that is different from username"),
    (b"alice-secret", "Authentication failed: invalid SASL/PLAIN request"),
])
async def test_a_failed_authentication_is_answered_then_the_connection_closes(listener, token,
                                                                              why):
    c = await Client.connect(listener)
    assert (await c.call(17, 1, SaslHandshakeRequest(mechanism="PLAIN"))).error_code == 0
    r = await c.call(36, 1, SaslAuthenticateRequest(auth_bytes=token))
    assert (r.error_code, r.error_message) == (ErrorCode.SASL_AUTHENTICATION_FAILED, why)
    assert await c.closed()


async def test_authenticate_before_the_handshake_is_refused(listener):
    c = await Client.connect(listener)
    r = await c.call(36, 0, SaslAuthenticateRequest(auth_bytes=b"\0alice\0alice-secret"))
    assert r.error_code == ErrorCode.ILLEGAL_SASL_STATE
    assert await c.closed()


async def test_requests_before_authentication_close_the_connection(listener):
    c = await Client.connect(listener)
    assert (await c.call(18, 3, _index.api_versions_request.ApiVersionsRequest(
        client_software_name="t", client_software_version="1"))).error_code == 0
    c.writer.write(b"".join(encode_request(
        _index.request_header.RequestHeader(3, 1, 9, "t"), MetadataRequest(topics=[]))))
    assert await c.closed()


async def test_handshake_v0_then_a_raw_token(listener):
    c = await Client.connect(listener)
    r = await c.call(17, 0, SaslHandshakeRequest(mechanism="PLAIN"))
    assert (r.error_code, r.mechanisms) == (ErrorCode.NONE, ["PLAIN"])
    token = b"\0alice\0alice-secret"
    c.writer.write(struct.pack(">i", len(token)) + token)
    assert await c.frame() == b"", "an empty server token"
    assert (await c.metadata()).brokers

    c = await Client.connect(listener)
    await c.call(17, 0, SaslHandshakeRequest(mechanism="PLAIN"))
    token = b"\0alice\0wrong"
    c.writer.write(struct.pack(">i", len(token)) + token)
    assert await c.closed()


async def test_a_listener_without_users_serves_everyone_and_refuses_sasl(open_listener):
    c = await Client.connect(open_listener)
    assert (await c.metadata()).brokers
    r = await c.call(17, 1, SaslHandshakeRequest(mechanism="PLAIN"))
    assert r.error_code == ErrorCode.ILLEGAL_SASL_STATE
