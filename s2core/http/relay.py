"""Passing S2 requests on to the server that serves their stream (several brokers sharing
one store: broker/cluster.py; docs/decisions/0022-s2-api-in-a-cluster.md).

A stream's records are served by the process holding its channel. A request for another
process's stream is relayed to that process's HTTP listener as it came: method, path,
headers and body go out as they arrive, the response comes back as it arrives. That
covers every kind of request alike: unary appends and reads, SSE read sessions, and the
s2-sdk's S2S sessions, which are full-duplex HTTP/2 streams (the client keeps sending
appends while acks come back). So the relay speaks HTTP/2 (cleartext with prior
knowledge, as our listener accepts; or over TLS, negotiated with ALPN, the peer's
certificate checked against `server.cluster_tls_ca_file`) over connections per peer, with the `h2` state machine that
hypercorn already brings, and one stream per relayed request.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger(__name__)

# not passed on (RFC 9113 8.2.2), nor what HTTP/2 carries as pseudo-headers
_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
        b"host", b"http2-settings", b"te", b"content-length"}
_OWN = {b"date", b"server"}  # (the relaying server's own)
_WINDOW = 16 * 1024 * 1024
RELAYED = b"s2kafka-relayed"  # on a relayed request: served where it lands, never relayed on
CONNECT_TIMEOUT_S = 5.0


class RelayError(Exception):
    """The peer could not be reached, or went away before it answered."""


class _Stream:
    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()
        self.window = asyncio.Event()  # set when the send window may have opened


class _Peer:
    """One HTTP/2 connection to another server, shared by the requests relayed to it."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.tls = tls
        self.conn: h2.connection.H2Connection | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.streams: dict[int, _Stream] = {}
        self.reader_task: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.closed = False
        self.draining = False

    async def connect(self) -> None:
        reader, self.writer = await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=self.tls,
            server_hostname=self.host if self.tls is not None else None), CONNECT_TIMEOUT_S)
        if self.tls is not None:
            alpn = self.writer.get_extra_info("ssl_object").selected_alpn_protocol()
            if alpn != "h2":
                self.writer.close()
                raise OSError(f"the peer did not speak HTTP/2 over TLS (ALPN {alpn!r})")
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW})
        self.conn.increment_flow_control_window(_WINDOW)
        self._flush()
        self.reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for ev in self.conn.receive_data(data):
                    self._dispatch(ev)
                self._flush()
        except (OSError, h2.exceptions.ProtocolError) as e:
            log.info("relay connection to %s:%d failed: %s", self.host, self.port, e)
        finally:
            self.closed = True
            for st in self.streams.values():
                st.events.put_nowait(None)  # (the connection is gone)
                st.window.set()
            with contextlib.suppress(Exception):
                self.writer.close()

    def _dispatch(self, ev) -> None:
        if isinstance(ev, h2.events.ConnectionTerminated):
            self.draining = True  # (GOAWAY: its streams finish, new ones go elsewhere)
            return
        if isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            for st in self.streams.values():
                st.window.set()
            return
        sid = getattr(ev, "stream_id", None)
        st = self.streams.get(sid) if sid is not None else None
        if st is not None:
            st.events.put_nowait(ev)
        if isinstance(ev, h2.events.DataReceived):  # (window given back at once: the
            # response is passed on as fast as the client takes it, through the queue)
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)

    async def send_data(self, sid: int, data: bytes, end: bool) -> None:
        """Send `data` on stream `sid` as its flow-control window allows."""
        view = memoryview(data)
        st = self.streams[sid]
        while view:
            if self.closed:
                raise RelayError("the connection to the peer closed")
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size)
            if room <= 0:
                st.window.clear()
                if self.conn.local_flow_control_window(sid) <= 0:
                    await st.window.wait()
                continue
            n = min(room, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            self._flush()
            view = view[n:]
            await self.writer.drain()
        if end:
            self.conn.end_stream(sid)
            self._flush()


class Relay:
    """Relays requests to the servers that serve their streams."""

    def __init__(self, locate: Callable[[str, str], Awaitable[tuple[str, int] | None]],
                 tls_ca_file: str | None = None) -> None:
        self.locate = locate  # (basin, stream) -> the HTTP address serving it, None if here
        self.tls: ssl.SSLContext | None = None  # https to the peers, checked against a CA
        if tls_ca_file:
            self.tls = ssl.create_default_context(cafile=tls_ca_file)
            self.tls.set_alpn_protocols(["h2"])
        self._peers: dict[tuple[str, int], list[_Peer]] = {}

    async def _peer(self, addr: tuple[str, int]) -> _Peer:
        """A connection to `addr` with room for one more stream (a new one if none has:
        sessions are long-lived, and a server takes ~100 streams a connection)."""
        peers = self._peers.setdefault(addr, [])
        peers[:] = [p for p in peers if not p.closed and not p.draining]
        for peer in peers:
            async with peer.lock:  # (wait while it connects)
                pass
            if peer.conn is not None and not peer.closed and len(peer.streams) < \
                    peer.conn.remote_settings.max_concurrent_streams:
                return peer
        peer = _Peer(*addr, tls=self.tls)
        peers.append(peer)
        async with peer.lock:
            try:
                await peer.connect()
            except (OSError, TimeoutError, ssl.SSLError) as e:
                peer.closed = True
                raise RelayError(f"cannot reach {addr[0]}:{addr[1]}: {e}") from None
        return peer

    async def relay(self, scope: dict[str, Any], receive, send, addr: tuple[str, int]) -> int:
        """Pass the request on to `addr` and its response back; the response status.
        RelayError if nothing was answered (the caller answers for it)."""
        peer = await self._peer(addr)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            raw_path += b"?" + scope["query_string"]
        host = next((v for k, v in scope["headers"] if k.lower() == b"host"),
                    f"{addr[0]}:{addr[1]}".encode())  # (a basin may be named by the host)
        headers = [(b":method", scope["method"].encode()),
                   (b":scheme", b"https" if peer.tls is not None else b"http"),
                   (b":authority", host), (b":path", raw_path)]
        headers += [(k.lower(), v) for k, v in scope["headers"] if k.lower() not in _HOP]
        headers.append((RELAYED, b"1"))
        sid = peer.conn.get_next_available_stream_id()
        st = _Stream()
        peer.streams[sid] = st
        peer.conn.send_headers(sid, headers)
        peer._flush()
        pump = asyncio.get_running_loop().create_task(self._pump(peer, sid, receive))
        started = False
        status = 502
        try:
            while True:
                ev = await st.events.get()
                if ev is None or isinstance(ev, h2.events.StreamReset):
                    if not started:
                        raise RelayError("the peer closed the stream before answering")
                    break
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                    await send({"type": "http.response.start", "status": status,
                                "headers": [(k, v) for k, v in ev.headers
                                            if not k.startswith(b":") and k not in _HOP
                                            and k not in _OWN]})
                    started = True
                elif isinstance(ev, h2.events.DataReceived):
                    await send({"type": "http.response.body", "body": ev.data,
                                "more_body": True})
                elif isinstance(ev, h2.events.StreamEnded):
                    break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            peer.streams.pop(sid, None)
            if not peer.closed:
                with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                    if peer.conn.streams.get(sid) is not None and \
                            not peer.conn.streams[sid].closed:
                        peer.conn.reset_stream(sid)
                peer._flush()

    @staticmethod
    async def _pump(peer: _Peer, sid: int, receive) -> None:
        """The request body, passed on as it arrives (a session's appends keep coming);
        then, until the response ends, a wait for the client to leave (a follow session
        relayed to nobody would run on)."""
        body_done = False
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":  # the client left: so does the relay
                if not peer.closed:
                    with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                        peer.conn.reset_stream(sid)
                    peer._flush()
                st = peer.streams.get(sid)
                if st is not None:
                    st.events.put_nowait(None)
                return
            if body_done:
                continue
            more = msg.get("more_body", False)
            await peer.send_data(sid, msg.get("body", b""), end=not more)
            body_done = not more

    async def close(self) -> None:
        for peers in self._peers.values():
            for peer in peers:
                if peer.reader_task is not None:
                    peer.reader_task.cancel()
                if peer.writer is not None:
                    peer.writer.close()
        self._peers.clear()
