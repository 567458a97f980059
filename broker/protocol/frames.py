"""Whole frames: size prefix, request/response headers, body; the codec's public entry points.

Pure functions (sans-IO): the caller owns sockets and buffers. Decoding takes the bytes of one
frame *without* its 4-byte size prefix; encoding returns a list of buffers, size prefix first,
ready for ``transport.writelines``. Record payloads are never copied either way.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from broker.protocol._wire import Message
from broker.protocol.errors import ErrorCode
from broker.protocol.exceptions import (
    DecodeError,
    EncodeError,
    FrameTooLargeError,
    InvalidStringError,
    TrailingBytesError,
    TruncatedError,
    UnknownApiKeyError,
    UnsupportedVersionError,
)
from broker.protocol.messages import _index
from broker.protocol.messages.api_versions_response import ApiVersion, ApiVersionsResponse
from broker.protocol.registry import API_VERSIONS_KEY, APIS, advertised_versions

Buffer = bytes | bytearray | memoryview
RequestHeader = _index.request_header.RequestHeader
ResponseHeader = _index.response_header.ResponseHeader

#: Kafka's default socket.request.max.bytes.
DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024

_REQ_PREFIX = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
_SIZE_CORR = struct.Struct(">ii")
_REQ_HEADER_DECODERS = _index.REQUEST_HEADER.DECODERS
_REQ_HEADER_ENCODERS = _index.REQUEST_HEADER.ENCODERS
_RESP_HEADER_DECODERS = _index.RESPONSE_HEADER.DECODERS


def _request_decoders() -> dict[tuple[int, int], tuple[Any, Any]]:
    table = {}
    for api_key, info in APIS.items():
        for version, decoder in info.request.DECODERS.items():
            header = _REQ_HEADER_DECODERS[info.request_header_version(version)]
            table[api_key, version] = (header, decoder)
    return table


#: (api_key, version) -> (request header decoder, body decoder): one lookup per request.
_REQUEST_DECODERS = _request_decoders()


def frame_size(buf: Buffer, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> int | None:
    """Size of the frame that starts ``buf`` (excluding the prefix), or None if fewer than 4
    bytes are available. Raises FrameTooLargeError for a negative or oversized prefix."""
    if len(buf) < 4:
        return None
    (size,) = _SIZE.unpack_from(buf, 0)
    if size < 0 or size > max_size:
        raise FrameTooLargeError(f"frame size {size} outside 0..{max_size}")
    return size


def _translate(exc: Exception) -> DecodeError:
    if isinstance(exc, DecodeError):
        return exc
    if isinstance(exc, UnicodeDecodeError):
        return InvalidStringError(f"invalid UTF-8 in a string field: {exc.reason}")
    return TruncatedError(f"message runs past the end of the frame ({exc})")


def peek_request_header(frame: Buffer) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) from the fixed start of a request frame."""
    if len(frame) < 8:
        raise TruncatedError("request frame shorter than its fixed header")
    return _REQ_PREFIX.unpack_from(frame, 0)


def decode_request(frame: Buffer, *, strict: bool = True) -> tuple[Any, Message]:
    """Decode one request frame (no size prefix) into (RequestHeader, body message).

    With ``strict=False`` bytes after the body are ignored, as Kafka's broker does (librdkafka
    2.16 sends three extra bytes after an all-topics Metadata v13 request).

    ``records`` fields of the body are memoryview slices of ``frame``. Raises a DecodeError
    subclass for anything malformed; UnknownApiKeyError and UnsupportedVersionError carry the
    correlation id so the caller can still answer (see ``encode_api_versions_unsupported``).
    """
    buf = frame if type(frame) is memoryview else memoryview(frame)
    try:
        api_key, version, correlation_id = _REQ_PREFIX.unpack_from(buf, 0)
    except struct.error:
        raise TruncatedError("request frame shorter than its fixed header") from None
    decoders = _REQUEST_DECODERS.get((api_key, version))
    if decoders is None:
        if api_key in APIS:
            raise UnsupportedVersionError(api_key, version, correlation_id)
        raise UnknownApiKeyError(api_key, version, correlation_id)
    try:
        header, pos = decoders[0](buf, 0)
        body, pos = decoders[1](buf, pos)
    except (struct.error, IndexError, UnicodeDecodeError, DecodeError) as exc:
        raise _translate(exc) from None
    if strict and pos != len(buf):
        name = APIS[api_key].name
        raise TrailingBytesError(f"{len(buf) - pos} bytes after {name} v{version} request")
    return header, body


def decode_response(frame: Buffer, api_key: int, version: int) -> tuple[Any, Message]:
    """Decode one response frame (no size prefix); the caller knows what it asked for."""
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    info = APIS.get(api_key)
    if info is None:
        raise UnknownApiKeyError(api_key, version, -1)
    decoder = info.response.DECODERS.get(version)
    if decoder is None:
        raise UnsupportedVersionError(api_key, version, -1)
    try:
        header, pos = _RESP_HEADER_DECODERS[info.response_header_version(version)](buf, 0)
        body, pos = decoder(buf, pos)
    except (struct.error, IndexError, UnicodeDecodeError, DecodeError) as exc:
        raise _translate(exc) from None
    if pos != len(buf):
        raise TrailingBytesError(f"{len(buf) - pos} bytes after {info.name} v{version} response")
    return header, body


def _finish(parts: list[Any]) -> list[Buffer]:
    if len(parts) > 1 and not parts[-1]:
        parts.pop()
    size = sum(map(len, parts)) - 4
    _SIZE.pack_into(parts[0], 0, size)
    return parts


def _encoder(api_key: int, version: int, request: bool) -> Any:
    info = APIS.get(api_key)
    if info is None:
        raise EncodeError(f"unknown api key {api_key}")
    encoders = info.request.ENCODERS if request else info.response.ENCODERS
    enc = encoders.get(version)
    if enc is None:
        raise EncodeError(f"{info.name} has no version {version}")
    return enc


def encode_response(correlation_id: int, body: Message, api_key: int,
                    version: int) -> list[Buffer]:
    """Encode a response (size prefix + header + body) as a list of buffers.

    The first buffer holds the prefix, header and everything up to the first record payload;
    record payloads follow as the very objects found in ``body`` (never copied).
    """
    enc = _encoder(api_key, version, request=False)
    out = bytearray(8)
    _SIZE_CORR.pack_into(out, 0, 0, correlation_id)
    if APIS[api_key].response_header_version(version) == 1:
        out.append(0)  # no tagged fields in the response header
    parts: list[Any] = [out]
    try:
        enc(body, parts)
    except (struct.error, AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode {type(body).__name__} v{version}: {exc}") from exc
    return _finish(parts)


def encode_request(header: Any, body: Message) -> list[Buffer]:
    """Encode a request (size prefix + header + body); header names the api key/version."""
    api_key, version = header.request_api_key, header.request_api_version
    enc = _encoder(api_key, version, request=True)
    parts: list[Any] = [bytearray(4)]
    try:
        _REQ_HEADER_ENCODERS[APIS[api_key].request_header_version(version)](header, parts)
        enc(body, parts)
    except (struct.error, AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode {type(body).__name__} v{version}: {exc}") from exc
    return _finish(parts)


def encode_api_versions_unsupported(
    correlation_id: int, api_versions: Iterable[tuple[int, int, int]] | None = None
) -> list[Buffer]:
    """The reply to an ApiVersions request whose version we do not know: a v0 response with
    UNSUPPORTED_VERSION and the (api_key, min, max) list, so the client retries with a version
    we support (KIP-511). Defaults to every API in the registry (Kafka itself lists only
    ApiVersions' own range; clients accept either)."""
    rows = advertised_versions() if api_versions is None else api_versions
    body = ApiVersionsResponse(
        error_code=ErrorCode.UNSUPPORTED_VERSION,
        api_keys=[ApiVersion(k, lo, hi) for k, lo, hi in rows],
    )
    return encode_response(correlation_id, body, API_VERSIONS_KEY, 0)
