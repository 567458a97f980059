"""Brokers of a cluster talking to each other (docs/decisions/0020).

A transaction coordinator writes its markers into partitions other brokers lead, as
Kafka's coordinator does: with a WriteTxnMarkers request to each of them. For that, each
broker of a cluster opens a second Kafka-protocol listener, `server.cluster_listen`, and
publishes its address in its registry row (broker/cluster.py). The listener has one SASL
user, `__broker`, with SCRAM-SHA-256 and the cluster's secret: a random value the first
broker keeps in metadata (`kafka/cluster-secret`), which every broker of the cluster can
read and nothing else needs to. Connections authenticated there act for the cluster (no
ACL applies to them, as Kafka's inter-broker principal is a super user). The listener
needs no configuration: it binds the Kafka listener's host on an ephemeral port unless
told otherwise, and the secret never travels (SCRAM proves it).

The client side keeps one connection per other broker, opened and authenticated at the
first request, and sends one request at a time on it; a failed connection is dropped and
the caller retries (the coordinator retries markers until they are in).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import struct
from typing import Any

from broker.protocol import decode_response, encode_request
from broker.protocol.errors import ErrorCode
from broker.protocol.messages import _index
from broker.protocol.messages.sasl_authenticate_request import SaslAuthenticateRequest
from broker.protocol.messages.sasl_handshake_request import SaslHandshakeRequest
from broker.protocol.messages.write_txn_markers_request import (
    WritableTxnMarker,
    WritableTxnMarkerTopic,
    WriteTxnMarkersRequest,
)
from broker.sasl import SaslUsers
from s2core.metadata.base import VersionMismatch

log = logging.getLogger(__name__)

INTERNAL_USER = "__broker"
MECHANISM = "SCRAM-SHA-256"
SECRET_KEY = "kafka/cluster-secret"
CALL_TIMEOUT_S = 10.0


async def cluster_secret(metadata) -> str:
    """The cluster's secret (made by the first broker that asks)."""
    row = await metadata.get(SECRET_KEY)
    if row is None:
        try:
            await metadata.create(SECRET_KEY, base64.b64encode(os.urandom(32)))
        except VersionMismatch:
            pass  # (another broker made it first)
        row = await metadata.get(SECRET_KEY)
    return row.value.decode()


class InterBroker:
    """This broker's internal listener and its connections to the others."""

    def __init__(self, broker) -> None:
        self.broker = broker
        self.secret = ""
        self.server = None
        self.address: tuple[str, int] | None = None  # as published
        self._links: dict[int, _Link] = {}

    async def start(self, host: str, port: int, advertised_host: str) -> None:
        from broker.server import KafkaServer

        self.secret = await cluster_secret(self.broker.store.metadata)
        users = SaslUsers({INTERNAL_USER: self.secret}, (MECHANISM,))
        self.server = KafkaServer(self.broker, sasl=users, internal=True)
        bound = await self.server.start(host, port)
        shown = advertised_host if bound[0] in ("0.0.0.0", "::", "") else bound[0]
        self.address = (shown, bound[1])

    async def stop(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
        if self.server is not None:
            await self.server.stop()

    def _link(self, node) -> _Link | None:
        if not node.internal:
            return None
        addr = (node.internal[0], node.internal[1])
        link = self._links.get(node.node_id)
        if link is None or link.addr != addr:
            if link is not None:
                link.close()
            link = self._links[node.node_id] = _Link(addr, self.secret)
        return link

    async def call(self, node_id: int, api_key: int, version: int, request) -> Any | None:
        """A request to broker `node_id` over its internal listener: its response, or None
        if it could not be asked (the caller answers or retries)."""
        node = self.broker.cluster.node(node_id)
        link = self._link(node) if node is not None else None
        if link is None:
            return None
        try:
            return await link.call(api_key, version, request)
        except Exception as e:  # noqa: BLE001 - unreachable, restarting, refused
            log.info("request %d to node %d failed: %s", api_key, node_id, e)
            return None

    async def write_markers(self, node_id: int, pid: int, epoch: int, commit: bool,
                            cepoch: int, topics: dict[str, list[int]]
                            ) -> list[tuple[str, int, int]]:
        """WriteTxnMarkers to broker `node_id`: (topic, partition, error code) for each
        partition it answered; nothing if it could not be asked (retried by the caller)."""
        request = WriteTxnMarkersRequest(markers=[WritableTxnMarker(
            producer_id=pid, producer_epoch=epoch, transaction_result=commit,
            coordinator_epoch=cepoch,
            topics=[WritableTxnMarkerTopic(name=t, partition_indexes=ps)
                    for t, ps in topics.items()])])
        resp = await self.call(node_id, 27, 1, request)
        if resp is None:
            return []
        return [(t.name, p.partition_index, p.error_code)
                for m in resp.markers for t in m.topics for p in t.partitions]


class _Link:
    """One authenticated connection to another broker's internal listener."""

    def __init__(self, addr: tuple[str, int], secret: str) -> None:
        self.addr = addr
        self.secret = secret
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._corr = 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def call(self, api_key: int, version: int, request) -> Any:
        async with self._lock:
            try:
                return await asyncio.wait_for(self._call_connected(api_key, version, request),
                                              CALL_TIMEOUT_S)
            except BaseException:
                self.close()
                raise

    async def _call_connected(self, api_key: int, version: int, request) -> Any:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(*self.addr)
            await self._authenticate()
        return await self._call(api_key, version, request)

    async def _call(self, api_key: int, version: int, request) -> Any:
        self._corr += 1
        header = _index.request_header.RequestHeader(api_key, version, self._corr,
                                                     "s2kafka-broker")
        self._writer.write(b"".join(encode_request(header, request)))
        (size,) = struct.unpack(">i", await self._reader.readexactly(4))
        frame = await self._reader.readexactly(size)
        head, resp = decode_response(memoryview(frame), api_key, version)
        if head.correlation_id != self._corr:
            raise ConnectionError("a response out of order")
        return resp

    async def _authenticate(self) -> None:
        r = await self._call(17, 1, SaslHandshakeRequest(mechanism=MECHANISM))
        if r.error_code != ErrorCode.NONE:
            raise ConnectionError(f"SASL handshake refused: {ErrorCode(r.error_code).name}")
        scram = ScramClient(INTERNAL_USER, self.secret)
        r = await self._call(36, 2, SaslAuthenticateRequest(auth_bytes=scram.first()))
        if r.error_code != ErrorCode.NONE:
            raise ConnectionError(f"authentication failed: {r.error_message}")
        r = await self._call(36, 2, SaslAuthenticateRequest(
            auth_bytes=scram.final(bytes(r.auth_bytes))))
        if r.error_code != ErrorCode.NONE:
            raise ConnectionError(f"authentication failed: {r.error_message}")
        scram.verify(bytes(r.auth_bytes))


class ScramClient:
    """The client's side of SCRAM-SHA-256 (RFC 5802, RFC 7677), no channel binding."""

    HASH = "sha256"

    def __init__(self, user: str, password: str, nonce: str | None = None) -> None:
        self.user = user.replace("=", "=3D").replace(",", "=2C")
        self.password = password.encode()
        self.nonce = nonce or base64.b64encode(os.urandom(24)).decode()
        self.bare = f"n={self.user},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in text.split(","))
        if not attrs.get("r", "").startswith(self.nonce):
            raise ConnectionError("SCRAM: the server's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac(self.HASH, self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", self.HASH).digest()
        stored_key = hashlib.new(self.HASH, client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth = f"{self.bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, auth, self.HASH).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self.HASH).digest()
        self.server_signature = hmac.new(server_key, auth, self.HASH).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        text = server_final.decode()
        if not text.startswith("v=") or not hmac.compare_digest(
                base64.b64decode(text[2:]), self.server_signature):
            raise ConnectionError("SCRAM: the server did not prove it knows the secret")
