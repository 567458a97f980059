"""A thin ASGI request/response layer: strict URL decoding, bounded bodies, replies.

Only what the S2 API needs, so the app has no web framework underneath it.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from s2core.http.errors import HttpError, bad_request
from s2core.http.s2s import GZIP, ZSTD, BadFrame, TooLarge, decompress

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

_ENCODINGS = {"gzip": GZIP, "zstd": ZSTD}
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def percent_decode(raw: bytes, *, plus_is_space: bool) -> str:
    """Strict percent-decoding to UTF-8; ValueError on a bad escape or invalid UTF-8."""
    if _BAD_ESCAPE.search(raw):
        raise ValueError("invalid percent-encoding")
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    out = bytearray()
    i = 0
    while i < len(raw):
        j = raw.find(b"%", i)
        if j < 0:
            out += raw[i:]
            break
        out += raw[i:j]
        out.append(int(raw[j + 1:j + 3], 16))
        i = j + 3
    return out.decode("utf-8")  # UnicodeDecodeError is a ValueError


class Request:
    """One HTTP request as the handlers see it."""

    def __init__(self, scope: Scope, receive: Receive, max_body: int) -> None:
        self.scope = scope
        self._receive = receive
        self.max_body = max_body
        self.method: str = scope["method"]
        self.headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers \
                else value
        raw_path = scope.get("raw_path") or scope["path"].encode()
        self.raw_path: bytes = raw_path.split(b"?", 1)[0]
        self.segments = self._decode_segments(self.raw_path)
        self.query = self._decode_query(scope.get("query_string", b""))
        self.route = "unmatched"  # filled in by the router, for metrics
        self.principal = None  # who it runs as (tokens.Principal), set by the router
        self.body_consumed = False
        self.body_ended = False  # the last body chunk arrived, or the client left

    @staticmethod
    def _decode_segments(raw_path: bytes) -> list[str]:
        try:
            # split before decoding so an encoded '/' stays inside a stream name
            return [percent_decode(s, plus_is_space=False) for s in raw_path.split(b"/")[1:]]
        except ValueError as exc:
            raise bad_request("bad_path", f"invalid path: {exc}") from None

    @staticmethod
    def _decode_query(qs: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in qs.split(b"&"):
            if not part:
                continue
            k, _, v = part.partition(b"=")
            try:
                key = percent_decode(k, plus_is_space=True)
                value = percent_decode(v, plus_is_space=True)
            except ValueError as exc:
                raise bad_request("bad_query", f"invalid query string: {exc}") from None
            if key in out:
                raise bad_request("bad_query", f"query parameter {key!r} given twice")
            out[key] = value
        return out

    def content_type(self) -> str:
        """The media type without parameters, lowercased ('' when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def accepts(self, media_type: str) -> bool:
        accept = self.headers.get("accept", "")
        return any(p.split(";", 1)[0].strip().lower() == media_type
                   for p in accept.split(","))

    async def body(self, malformed: str = "bad_proto") -> bytes:
        """The whole body, decompressed per Content-Encoding (zstd, gzip: s2-sdk compresses
        request bodies when asked to); 413 beyond `max_body` (checked against
        Content-Length first, and again after decompressing). A body that does not
        decompress is 400 with the code `malformed`."""
        raw = await self._raw_body()
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "identity":
            return raw
        algo = _ENCODINGS.get(encoding)
        if algo is None:
            raise HttpError(415, "bad_header", f"unsupported content-encoding {encoding!r}")
        try:
            return decompress(raw, algo, self.max_body)
        except TooLarge:
            raise _too_large(self.max_body) from None
        except BadFrame as exc:
            raise bad_request(malformed, f"body does not decompress: {exc}") from None

    async def _raw_body(self) -> bytes:
        assert not self.body_consumed, "body read twice"
        self.body_consumed = True
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(self.max_body)
        chunks = []
        size = 0
        async for chunk in self.stream():
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(self.max_body)
            chunks.append(chunk)
        return b"".join(chunks)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Ends at the end of the body or when the client leaves."""
        self.body_consumed = True
        while not self.body_ended:
            msg = await self._next()
            if msg.get("body"):
                yield msg["body"]

    async def wait_disconnect(self) -> None:
        """Return when the client goes away (after the body, if any, is drained)."""
        while (await self._next())["type"] != "http.disconnect":
            pass

    async def _next(self) -> dict:
        msg = await self._receive()
        if msg["type"] == "http.disconnect" or not msg.get("more_body", False):
            self.body_ended = True
        return msg

    async def discard_rest(self, idle_s: float = 1.0, limit: int = 64 << 20) -> None:
        """Read and drop what is left of the request body; call before ending a response.

        Hypercorn (0.18) fails the whole HTTP/2 connection when DATA arrives for a stream
        whose response has ended (KeyError in its event loop), and over HTTP/1.1 it closes
        the connection: so an early answer (413, 4xx before the body was read, an S2S
        terminal frame) waits for the body's end first. Gives up after `limit` bytes or
        `idle_s` without data (a client that reset its stream sends nothing more)."""
        received = 0
        while not self.body_ended and received < limit:
            try:
                msg = await asyncio.wait_for(self._next(), idle_s)
            except TimeoutError:
                return
            received += len(msg.get("body", b""))

    async def json(self) -> Any:
        """The body parsed as JSON (None for an empty body); 400 bad_json if malformed."""
        raw = await self.body("bad_json")
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad_request("bad_json", f"malformed JSON: {exc}") from None


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "request_too_large", f"request body is larger than {limit} bytes")


class Response:
    """A complete (non-streaming) response."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: str | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    @classmethod
    def json(cls, value: Any, status: int = 200,
             headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status, json.dumps(value).encode(), "application/json", headers)

    @classmethod
    def error(cls, err: HttpError) -> Response:
        return cls(err.status, err.json_bytes(), "application/json", err.headers)

    async def send(self, send: Send) -> None:
        headers = [(b"content-length", str(len(self.body)).encode())]
        if self.content_type:
            headers.append((b"content-type", self.content_type.encode()))
        headers += [(k.encode(), v.encode()) for k, v in self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


async def start_stream(send: Send, content_type: str,
                       headers: tuple[tuple[str, str], ...] = ()) -> None:
    """Send the 200 head of a streaming response (SSE or S2S)."""
    hs = [(b"content-type", content_type.encode()), (b"cache-control", b"no-cache")]
    hs += [(k.encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": 200, "headers": hs})


class StreamingResponse:
    """Marker returned by handlers that already sent their whole response themselves."""

    __slots__ = ("status",)

    def __init__(self, status: int = 200) -> None:
        self.status = status
