"""The Kafka listener: an asyncio connection shell around the pure codec.

Frames are read into exactly-sized buffers (large ones straight from the socket, with no
copy), decoded, and dispatched by API key. A request's first phase runs in request order
(so a producer's pipelined batches are sequenced in the order sent); what it then awaits
(durability, long polls) runs concurrently, and responses are written in request order.
At most `max_inflight_requests` requests per connection are in progress; beyond that the
connection stops reading. Oversized or malformed frames close the connection.
"""
from __future__ import annotations

import asyncio
import ctypes
import inspect
import logging
import ssl as ssl_module
import struct
import time
from typing import Any

from broker.kafka import Broker
from broker.protocol.exceptions import (
    DecodeError,
    UnknownApiKeyError,
    UnsupportedVersionError,
)
from broker.protocol.frames import decode_request, encode_api_versions_unsupported, encode_response
from broker.protocol.registry import API_VERSIONS_KEY
from broker.quotas import PRODUCE as PRODUCER_BYTE_RATE
from broker.quotas import client_throttles, quota_user
from broker.sasl import AuthFailed

log = logging.getLogger(__name__)

_SCRATCH = 64 * 1024
_SIZE = struct.Struct(">i")

try:  # CPython: a bytearray left uninitialized (PyByteArray_FromStringAndSize(NULL, n))
    _new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
    _new_bytearray.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _new_bytearray.restype = ctypes.py_object
except AttributeError:  # pragma: no cover - another interpreter
    _new_bytearray = None


def frame_buffer(size: int) -> bytearray:
    """A bytearray of `size` bytes for a frame the socket then fills whole, not zeroed
    first: zeroing each 1 MB produce frame cost about a tenth of the broker's CPU at
    300 MiB/s. Only complete frames are ever read."""
    if _new_bytearray is None:
        return bytearray(size)
    return _new_bytearray(None, size)


class RecordParts(list):
    """Record payloads for one `records` field, kept as separate buffers (never joined).

    The codec treats it as one opaque bytes-like value (its len is the byte total); the
    connection flattens it into the buffers handed to `transport.writelines`."""

    __slots__ = ("nbytes",)

    def __init__(self, parts=()) -> None:
        super().__init__(parts)
        self.nbytes = sum(len(p) for p in self)

    def add(self, part) -> None:
        self.append(part)
        self.nbytes += len(part)

    def __len__(self) -> int:  # noqa: D105 - the codec writes this as the byte length
        return self.nbytes

    def __bool__(self) -> bool:
        return list.__len__(self) > 0


def _flatten(parts: list) -> list:
    out = []
    for p in parts:
        if isinstance(p, RecordParts):
            out.extend(list.__iter__(p))
        else:
            out.append(p)
    return out


class Connection(asyncio.BufferedProtocol):
    """One client connection."""

    def __init__(self, broker: Broker, server: KafkaServer) -> None:
        self.broker = broker
        self.server = server
        self.cfg = broker.config
        self.sasl = server.sasl if server.sasl is not None else broker.sasl
        self.internal = server.internal  # the brokers' own listener (broker/interbroker.py)
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self.client_id: str | None = None
        self._scratch = bytearray(_SCRATCH)
        self._have = 0            # bytes in _scratch
        self._frame: bytearray | None = None  # a large frame being filled directly
        self._frame_have = 0
        self._requests: asyncio.Queue = asyncio.Queue()
        self._responses: asyncio.Queue = asyncio.Queue()
        self._inflight = 0
        self._paused = False
        self._closed = False
        self._last_active = time.monotonic()
        self._tasks: list[asyncio.Task] = []
        # SASL: the exchange a SaslHandshake started, the user once authenticated. On a
        # listener with SASL users nothing but ApiVersions and the SASL exchange is served
        # before that (Kafka closes the connection, as here), in frames of at most
        # _MAX_UNAUTHENTICATED_FRAME bytes
        self.sasl_exchange = None
        self.principal: str | None = None
        self.acl_principal: str | None = None  # "User:..." for ACLs, once asked (acls.py)
        self.sasl_raw = False  # after a SaslHandshake v0: the next frame is a raw token
        self.close_after_response = False  # (a failed authentication)
        self.quota_user: str | None = None  # (broker/quotas.py)
        self._muted_until = 0.0  # quota throttling: muted until then (monotonic; 0: not)

    # -- asyncio protocol ------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._dispatch_loop()),
                       loop.create_task(self._write_loop())]
        self.server.connections.add(self)
        if self.broker.quotas.ip_quotas and self.peer:
            ms = self.broker.quotas.connection(self.peer[0])
            if ms:  # over the IP's connection_creation_rate: held unread, then closed
                log.info("closing %s after %d ms: connection_creation_rate exceeded",
                         self.peer, ms)
                transport.pause_reading()
                self._muted_until = time.monotonic() + ms / 1000 + 1  # (closed first)
                loop.call_later(ms / 1000, self.close)

    def connection_lost(self, exc) -> None:
        self._closed = True
        self._requests.put_nowait(None)
        self._responses.put_nowait(None)
        self.server.connections.discard(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._frame is not None:
            return memoryview(self._frame)[self._frame_have:]
        if self._have == len(self._scratch):
            self._scratch.extend(bytes(len(self._scratch)))
        return memoryview(self._scratch)[self._have:]

    def buffer_updated(self, nbytes: int) -> None:
        self._last_active = time.monotonic()
        if self._frame is not None:
            self._frame_have += nbytes
            if self._frame_have == len(self._frame):
                frame, self._frame = self._frame, None
                self._submit(frame)
            return
        self._have += nbytes
        self._parse_scratch()

    def _parse_scratch(self) -> None:
        buf = self._scratch
        pos = 0
        while self._have - pos >= 4:
            (size,) = _SIZE.unpack_from(buf, pos)
            limit = self.cfg.max_frame_bytes if self.principal is not None or \
                not self.sasl else _MAX_UNAUTHENTICATED_FRAME
            if size < (0 if self.sasl_raw else 8) or size > limit:
                log.warning("closing %s: frame size %d outside 8..%d", self.peer, size, limit)
                self.close()
                return
            if self._have - pos - 4 >= size:
                self._submit(bytes(buf[pos + 4:pos + 4 + size]))
                pos += 4 + size
                continue
            if size > _SCRATCH:  # big frame: read the rest straight into its own buffer
                frame = frame_buffer(size)
                got = self._have - pos - 4
                frame[:got] = buf[pos + 4:self._have]
                self._frame, self._frame_have = frame, got
                pos = self._have
            break
        if pos:
            rest = self._have - pos
            buf[:rest] = buf[pos:self._have]
            self._have = rest
            if len(buf) > _SCRATCH and rest <= _SCRATCH:
                del buf[_SCRATCH:]

    def _submit(self, frame) -> None:
        self._inflight += 1
        self._requests.put_nowait(frame)
        if self._inflight >= self.cfg.max_inflight_requests and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _done_one(self) -> None:
        self._inflight -= 1
        if self._paused and self._inflight < self.cfg.max_inflight_requests // 2:
            self._paused = False
            if not self._closed and time.monotonic() >= self._muted_until:
                self.transport.resume_reading()

    def _mute(self, ms: int) -> None:
        """Read nothing more for `ms` milliseconds (a quota's throttle, KIP-219)."""
        until = time.monotonic() + ms / 1000
        if until <= self._muted_until or self._closed:
            return
        self._muted_until = until
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(ms / 1000, self._unmute, until)

    def _unmute(self, armed_for: float) -> None:
        # whether the mute is over is told by which one this timer was armed for, not by
        # the clock: uvloop's timers may fire a little before the time asked
        if self._muted_until != armed_for:
            return  # a longer one came since: its own timer ends it
        self._muted_until = 0.0
        if not self._closed and not self._paused:
            self.transport.resume_reading()

    def close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()

    # -- request processing ----------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            frame = await self._requests.get()
            if frame is None:
                return
            if self._muted_until:  # throttled by a quota: nothing starts before its end
                wait = self._muted_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                item = await self._dispatch(memoryview(frame))
            except Exception:  # noqa: BLE001 - a bug in one handler must not kill the broker
                log.exception("request from %s failed; closing the connection", self.peer)
                self._responses.put_nowait(None)
                self.close()
                return
            self._responses.put_nowait(item)
            if self.close_after_response:
                self._responses.put_nowait(_Close())
                return

    async def _dispatch(self, frame: memoryview) -> Any:
        if self.sasl_raw:
            return self._raw_sasl(frame)
        try:
            header, request = decode_request(frame, strict=False)
        except UnsupportedVersionError as e:
            if e.api_key == API_VERSIONS_KEY:
                return encode_api_versions_unsupported(e.correlation_id,
                                                       self.broker.api_versions())
            log.info("closing %s: unsupported %s", self.peer, e)
            return _Close()
        except UnknownApiKeyError as e:
            log.info("closing %s: %s", self.peer, e)
            return _Close()
        except DecodeError as e:
            log.info("closing %s: malformed request: %s (frame starts %s, ends %s)", self.peer,
                     e, bytes(frame[:48]).hex(), bytes(frame[-16:]).hex())
            return _Close()
        api_key = header.request_api_key
        version = header.request_api_version
        svc = self.broker.services.get(api_key)
        if svc is None or not svc.VERSIONS[0] <= version <= svc.VERSIONS[1]:
            if api_key == API_VERSIONS_KEY:
                return encode_api_versions_unsupported(header.correlation_id,
                                                       self.broker.api_versions())
            if svc is None or not hasattr(svc, "unsupported_version"):
                log.info("closing %s: api %d v%d not served", self.peer, api_key, version)
                return _Close()
        if self.principal is None and self.sasl and \
                api_key not in _BEFORE_AUTHENTICATION:
            log.info("closing %s: api %d before SASL authentication", self.peer, api_key)
            return _Close()
        if header.client_id is not None:
            self.client_id = header.client_id
        throttle = 0
        if api_key == 0 and self.broker.quotas.client_quotas:
            # a produce counts when it is read (Kafka's channel is muted from then on)
            throttle = self.broker.quotas.record(quota_user(self), self.client_id or "",
                                                 PRODUCER_BYTE_RATE, len(frame))
            if throttle:
                self._mute(throttle)
        t0 = time.perf_counter()
        if svc is not None and not svc.VERSIONS[0] <= version <= svc.VERSIONS[1]:
            result = svc.unsupported_version(self.broker, header, request)
        else:
            result = await svc.handle(self.broker, self, header, request)
        return (header, result, throttle, time.perf_counter() - t0)

    def _raw_sasl(self, frame: memoryview) -> Any:
        """A SASL token after a SaslHandshake v0, without a Kafka header: the reply token
        goes back size-prefixed; on failure the connection closes (v0 has no way to say
        why, and Kafka closes it too)."""
        try:
            reply, user = self.sasl_exchange.step(bytes(frame))
        except AuthFailed as e:
            log.info("closing %s: %s", self.peer, e)
            return _Close()
        if user is not None:
            self.principal, self.sasl_exchange, self.sasl_raw = user, None, False
        return [_SIZE.pack(len(reply)), reply]

    async def _write_loop(self) -> None:
        while True:
            item = await self._responses.get()
            if item is None:
                return
            try:
                if isinstance(item, _Close):
                    self.close()
                    return
                if isinstance(item, list):  # pre-encoded
                    self._write(item)
                    continue
                header, result, throttle, handler_s = item
                if inspect.isawaitable(result):
                    result = await result
                if not self.broker.quotas.client_quotas:
                    if result is None:
                        continue  # acks=0
                    parts = encode_response(header.correlation_id, result,
                                            header.request_api_key, header.request_api_version)
                    self._write(_flatten(parts))
                else:
                    await self._write_throttled(header, result, throttle, handler_s)
            except Exception:  # noqa: BLE001
                log.exception("response to %s failed; closing the connection", self.peer)
                self.close()
                return
            finally:
                self._done_one()

    async def _write_throttled(self, header, result, throttle: int,
                               handler_s: float) -> None:
        """Write a response with the client's quotas applied (broker/quotas.py): the
        request is counted (a produce's bytes were when it was read: their `throttle`),
        and if that earns a throttle the response says so and the connection is muted for
        that long: no request is read or started meanwhile. The response goes out at once
        to clients that back off by themselves (KIP-219), after the throttle to older
        request versions."""
        key, version = header.request_api_key, header.request_api_version
        t0 = time.perf_counter()
        parts = None
        response_bytes = 0
        if result is not None:
            parts = _flatten(encode_response(header.correlation_id, result, key, version))
            response_bytes = sum(len(p) for p in parts)
        handler_s += time.perf_counter() - t0
        ms = self.broker.quotas.throttle_request(quota_user(self), self.client_id or "", key,
                                                 response_bytes, handler_s)
        ms = max(ms, throttle)
        said = getattr(result, "throttle_time_ms", None) or 0  # (a mutation quota's)
        if ms > said and result is not None and hasattr(result, "throttle_time_ms"):
            result.throttle_time_ms = ms
            parts = _flatten(encode_response(header.correlation_id, result, key, version))
        ms = max(ms, said)
        if ms:
            self._mute(ms)
            if parts is not None and not client_throttles(key, version):
                await asyncio.sleep(ms / 1000)  # (muted meanwhile: nothing else is read)
        if parts is not None:
            self._write(parts)

    def _write(self, parts: list) -> None:
        if not self._closed:
            self.transport.writelines(parts)


_BEFORE_AUTHENTICATION = frozenset({API_VERSIONS_KEY, 17, 36})  # ApiVersions, SASL
_MAX_UNAUTHENTICATED_FRAME = 512 * 1024  # Kafka's sasl.server.max.receive.size


class _Close:
    """Marker: close the connection here (after earlier responses are written)."""


class KafkaServer:
    """The Kafka listener and its connections."""

    def __init__(self, broker: Broker, sasl=None, internal: bool = False) -> None:
        self.broker = broker
        self.sasl = sasl  # the listener's own users (None: the broker's)
        self.internal = internal
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[Connection] = set()
        self._idle_task: asyncio.Task | None = None

    async def start(self, host: str, port: int,
                    ssl: ssl_module.SSLContext | None = None) -> tuple[str, int]:
        """Listen on host:port (TLS with `ssl`: Kafka's security.protocol=SSL)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Connection(self.broker, self),
                                               host, port, reuse_address=True, backlog=1024,
                                               ssl=ssl, ssl_handshake_timeout=30 if ssl else None)
        self._idle_task = loop.create_task(self._reap_idle())
        return self.server.sockets[0].getsockname()[:2]

    async def _reap_idle(self) -> None:
        timeout = self.broker.config.idle_timeout_s
        while True:
            await asyncio.sleep(min(timeout, 30))
            now = time.monotonic()
            for c in list(self.connections):
                if now - c._last_active > timeout and c._inflight == 0:
                    log.info("closing idle connection %s", c.peer)
                    c.close()

    async def stop(self) -> None:
        if self._idle_task:
            self._idle_task.cancel()
        if self.server:
            self.server.close()
        for c in list(self.connections):
            c.close()
        if self.server:
            await self.server.wait_closed()
