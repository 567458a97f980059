"""SASL on the Kafka listener (PLAIN, SCRAM-SHA-256/512), frame by frame over a real
socket: SaslHandshake v1 and SaslAuthenticate, the raw tokens that follow a SaslHandshake
v0, and what is refused (other mechanisms, wrong passwords, requests before
authentication, SASL on a listener without users). SCRAM is checked against RFC 7677's
example and against a client written here from RFC 5802."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct

import pytest

from broker.protocol import decode_response, encode_request
from broker.protocol.errors import ErrorCode
from broker.protocol.messages import _index
from broker.protocol.messages.metadata_request import MetadataRequest
from broker.protocol.messages.sasl_authenticate_request import SaslAuthenticateRequest
from broker.protocol.messages.sasl_handshake_request import SaslHandshakeRequest
from broker.sasl import AuthFailed, SaslUsers, ScramExchange, scram_credential
from broker.server import KafkaServer

USERS = {"alice": "alice-secret", "b,o=b": "pencil"}
OFFERED = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


@pytest.fixture
async def listen(memory_broker):
    """`await listen(users)`: (broker, port of its Kafka listener)."""
    servers = []

    async def start(users):
        b = await memory_broker(sasl_users=users)
        server = KafkaServer(b)
        servers.append(server)
        _, port = await server.start("127.0.0.1", 0)
        return b, port

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def listener(listen):
    return (await listen(USERS))[1]


@pytest.fixture
async def open_listener(listen):
    return (await listen({}))[1]


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
    r = await c.call(17, 1, SaslHandshakeRequest(mechanism="GSSAPI"))
    assert (r.error_code, r.mechanisms) == (ErrorCode.UNSUPPORTED_SASL_MECHANISM, OFFERED)
    r = await c.call(17, 1, SaslHandshakeRequest(mechanism="PLAIN"))
    assert (r.error_code, r.mechanisms) == (ErrorCode.NONE, OFFERED)
    r = await c.call(36, 2, SaslAuthenticateRequest(auth_bytes=b"\0alice\0alice-secret"))
    assert (r.error_code, r.error_message, r.session_lifetime_ms) == (ErrorCode.NONE, None, 0)
    assert (await c.metadata()).brokers, "served once authenticated"
    r = await c.call(17, 1, SaslHandshakeRequest(mechanism="PLAIN"))
    assert r.error_code == ErrorCode.ILLEGAL_SASL_STATE, "one authentication per connection"


@pytest.mark.parametrize("token,why", [
    (b"\0alice\0wrong", "Authentication failed: Invalid username or password"),
    (b"\0mallory\0alice-secret", "Authentication failed: Invalid username or password"),
    (b"bob\0alice\0alice-secret", ("Authentication failed: Client requested an authorization "
                                   "id that is different from username")),
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
    assert (r.error_code, r.mechanisms) == (ErrorCode.NONE, OFFERED)
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


def test_scram_sha_256_against_rfc_7677():
    users = SaslUsers({"user": "pencil"})
    users.scram["SCRAM-SHA-256"]["user"] = scram_credential(
        "pencil", "sha256", salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    x = ScramExchange(users, "SCRAM-SHA-256", server_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    reply, user = x.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert (reply, user) == ((b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                              b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), None)
    reply, user = x.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                         b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert (reply, user) == (b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "user")


def scram_client(mechanism: str, user: str, password: str):
    """A SCRAM client from RFC 5802: yields its messages, is sent the server's."""
    h = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    cnonce = base64.b64encode(os.urandom(12)).decode()
    bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={cnonce}"
    server_first = (yield f"n,,{bare}".encode()).decode()
    fields = dict(f.split("=", 1) for f in server_first.split(","))
    assert fields["r"].startswith(cnonce)
    salted = hashlib.pbkdf2_hmac(h, password.encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    without = f"c=biws,r={fields['r']}"
    auth = f"{bare},{server_first},{without}".encode()
    client_key = hmac.new(salted, b"Client Key", h).digest()
    signature = hmac.new(hashlib.new(h, client_key).digest(), auth, h).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    server_final = yield f"{without},p={proof}".encode()
    server_key = hmac.new(salted, b"Server Key", h).digest()
    assert server_final == b"v=" + base64.b64encode(hmac.new(server_key, auth, h).digest()), \
        "the server proves it knows the password too"
    yield None


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_over_sasl_authenticate(listener, mechanism):
    c = await Client.connect(listener)
    assert (await c.call(17, 1, SaslHandshakeRequest(mechanism=mechanism))).error_code == 0
    client = scram_client(mechanism, "b,o=b", "pencil")
    r = await c.call(36, 2, SaslAuthenticateRequest(auth_bytes=next(client)))
    assert r.error_code == 0
    r = await c.call(36, 2, SaslAuthenticateRequest(auth_bytes=client.send(r.auth_bytes)))
    assert (r.error_code, r.error_message) == (0, None)
    assert client.send(r.auth_bytes) is None
    assert (await c.metadata()).brokers


async def test_scram_with_a_wrong_password_or_user_fails(listener):
    for user, password, why in (
            ("alice", "wrong", ("Authentication failed during authentication due to invalid "
                                "credentials with SASL mechanism SCRAM-SHA-512")),
            ("mallory", "x", "Authentication failed: Invalid user credentials")):
        c = await Client.connect(listener)
        assert (await c.call(17, 1, SaslHandshakeRequest(mechanism="SCRAM-SHA-512"))) \
            .error_code == 0
        client = scram_client("SCRAM-SHA-512", user, password)
        r = await c.call(36, 2, SaslAuthenticateRequest(auth_bytes=next(client)))
        if r.error_code == 0:
            r = await c.call(36, 2, SaslAuthenticateRequest(auth_bytes=client.send(
                r.auth_bytes)))
        assert (r.error_code, r.error_message) == (ErrorCode.SASL_AUTHENTICATION_FAILED, why)
        assert await c.closed()


async def test_scram_after_a_handshake_v0_travels_as_raw_tokens(listener):
    c = await Client.connect(listener)
    assert (await c.call(17, 0, SaslHandshakeRequest(mechanism="SCRAM-SHA-256"))) \
        .error_code == 0
    client = scram_client("SCRAM-SHA-256", "alice", "alice-secret")
    token = next(client)
    c.writer.write(struct.pack(">i", len(token)) + token)
    token = client.send(await c.frame())
    c.writer.write(struct.pack(">i", len(token)) + token)
    assert client.send(await c.frame()) is None
    assert (await c.metadata()).brokers


def test_scram_refuses_a_tampered_final_message():
    users = SaslUsers({"alice": "alice-secret"})
    x = ScramExchange(users, "SCRAM-SHA-256")
    client = scram_client("SCRAM-SHA-256", "alice", "alice-secret")
    final = client.send(x.step(next(client))[0])
    with pytest.raises(AuthFailed):
        x.step(final.replace(b"c=biws", b"c=eSws"))  # (another channel binding)


def test_scram_takes_the_doubled_client_nonce_of_librdkafka_before_2_6_1():
    """librdkafka < 2.6.1 sends r=c-nonce + (c-nonce + s-nonce); its proof covers what it
    sent, so that form authenticates. Any other nonce does not."""
    users = SaslUsers({"user": "pencil"})
    for sent_nonce, ok in (("{c}{c}{s}", True), ("{c}{s}", True), ("x{c}{s}", False),
                           ("{c}", False)):
        x = ScramExchange(users, "SCRAM-SHA-256", server_nonce="SERVER")
        first = x.step(b"n,,n=user,r=CLIENT")[0].decode()
        nonce = sent_nonce.format(c="CLIENT", s="SERVER")
        fields = dict(f.split("=", 1) for f in first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(fields["s"]), 4096)
        without = f"c=biws,r={nonce}"
        auth = f"n=user,r=CLIENT,{first},{without}".encode()
        key = hmac.new(salted, b"Client Key", "sha256").digest()
        sig = hmac.new(hashlib.sha256(key).digest(), auth, "sha256").digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(key, sig))).decode()
        if ok:
            assert x.step(f"{without},p={proof}".encode())[1] == "user"
        else:
            with pytest.raises(AuthFailed):
                x.step(f"{without},p={proof}".encode())


async def test_a_big_frame_before_authentication_closes_the_connection(listener, open_listener):
    """Kafka's sasl.server.max.receive.size: 512 KiB until the client is authenticated."""
    c = await Client.connect(listener)
    c.writer.write(struct.pack(">i", 600 * 1024) + bytes(1024))
    assert await c.closed()
    c = await Client.connect(open_listener)  # (no SASL: the frame limit is the usual one)
    c.writer.write(struct.pack(">i", 600 * 1024) + bytes(1024))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c.reader.read(1), 0.5)


async def test_scram_credential_admin_refusals(listen):
    from broker.protocol.messages.alter_user_scram_credentials_request import (
        AlterUserScramCredentialsRequest,
        ScramCredentialDeletion,
        ScramCredentialUpsertion,
    )
    from broker.protocol.messages.describe_user_scram_credentials_request import (
        DescribeUserScramCredentialsRequest,
        UserName,
    )
    from broker.services import alter_user_scram_credentials as alter
    from broker.services import describe_user_scram_credentials as describe
    b, _ = await listen(USERS)
    salted = hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 4096)

    def up(name, mech=1, iterations=4096, salted_password=salted):
        return ScramCredentialUpsertion(name=name, mechanism=mech, iterations=iterations,
                                        salt=b"salt", salted_password=salted_password)

    r = await alter.handle(b, None, None, AlterUserScramCredentialsRequest(
        deletions=[ScramCredentialDeletion(name="alice", mechanism=1),
                   ScramCredentialDeletion(name="dave", mechanism=2)],
        upsertions=[up("carol"), up("erin", iterations=100), up("frank", mech=9),
                    up("gina"), up("gina"), up(""), up("hal", salted_password=b"x")]))
    assert [(x.user, x.error_code) for x in r.results] == [
        ("alice", ErrorCode.RESOURCE_NOT_FOUND),  # (configured, never set)
        ("dave", ErrorCode.RESOURCE_NOT_FOUND), ("carol", 0),
        ("erin", ErrorCode.UNACCEPTABLE_CREDENTIAL),
        ("frank", ErrorCode.UNSUPPORTED_SASL_MECHANISM),
        ("gina", ErrorCode.DUPLICATE_RESOURCE), ("", ErrorCode.UNACCEPTABLE_CREDENTIAL),
        ("hal", ErrorCode.UNACCEPTABLE_CREDENTIAL)]
    r = await describe.handle(b, None, None, DescribeUserScramCredentialsRequest(
        users=[UserName(name="carol"), UserName(name="zed"), UserName(name="carol")]))
    assert [(x.user, x.error_code) for x in r.results] == [
        ("carol", ErrorCode.DUPLICATE_RESOURCE), ("zed", ErrorCode.RESOURCE_NOT_FOUND),
        ("carol", ErrorCode.DUPLICATE_RESOURCE)]
    r = await describe.handle(b, None, None, DescribeUserScramCredentialsRequest(
        users=[UserName(name="carol")]))
    assert [(i.mechanism, i.iterations) for i in r.results[0].credential_infos] == \
        [(1, 4096)]
    # a stored credential logs in, and comes back from metadata in a new broker
    x = b.sasl.start("SCRAM-SHA-256")
    client = scram_client("SCRAM-SHA-256", "carol", "pw")
    reply, _ = x.step(next(client))
    assert x.step(client.send(reply))[1] == "carol"
    fresh = SaslUsers(USERS)
    await fresh.load(b.store.metadata)
    assert fresh.credential("SCRAM-SHA-256", "carol") == \
        b.sasl.credential("SCRAM-SHA-256", "carol")
