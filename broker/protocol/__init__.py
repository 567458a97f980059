"""Kafka wire protocol: a pure (sans-IO), generated, zero-copy codec.

Entry points: ``decode_request`` / ``encode_response`` (and the client-side mirrors used by
tests), the API registry, the error-code table and the record batch v2 helpers in
``broker.protocol.records``. Message classes live in ``broker.protocol.messages.<name>``.

Typical server use::

    size = frame_size(buffer)                     # None: need more bytes
    try:
        header, request = decode_request(frame)   # frame: memoryview of one frame's bytes
    except UnsupportedVersionError as e:          # e.g. a too-new ApiVersions request
        transport.writelines(encode_api_versions_unsupported(e.correlation_id))
    ...
    transport.writelines(encode_response(header.correlation_id, response,
                                         header.request_api_key, header.request_api_version))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from broker.protocol.errors import ErrorCode
from broker.protocol.exceptions import (
    CorruptRecordBatchError,
    DecodeError,
    DecompressionLimitError,
    EncodeError,
    FrameTooLargeError,
    InvalidLengthError,
    InvalidStringError,
    InvalidVarintError,
    ProtocolError,
    TrailingBytesError,
    TruncatedError,
    UnknownApiKeyError,
    UnsupportedVersionError,
)

if TYPE_CHECKING:
    from broker.protocol.frames import (
        DEFAULT_MAX_FRAME_SIZE,
        RequestHeader,
        ResponseHeader,
        decode_request,
        decode_response,
        encode_api_versions_unsupported,
        encode_request,
        encode_response,
        frame_size,
        peek_request_header,
    )
    from broker.protocol.registry import APIS, APIS_BY_NAME, ApiInfo, advertised_versions

# Loaded on first use, so that ``python -m broker.protocol.codegen`` can run (and repair)
# even when the generated modules are stale or broken.
_LAZY = {
    "DEFAULT_MAX_FRAME_SIZE": "frames", "RequestHeader": "frames", "ResponseHeader": "frames",
    "decode_request": "frames", "decode_response": "frames",
    "encode_api_versions_unsupported": "frames", "encode_request": "frames",
    "encode_response": "frames", "frame_size": "frames", "peek_request_header": "frames",
    "APIS": "registry", "APIS_BY_NAME": "registry", "ApiInfo": "registry",
    "advertised_versions": "registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'broker.protocol' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"broker.protocol.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "APIS",
    "APIS_BY_NAME",
    "DEFAULT_MAX_FRAME_SIZE",
    "ApiInfo",
    "CorruptRecordBatchError",
    "DecodeError",
    "DecompressionLimitError",
    "EncodeError",
    "ErrorCode",
    "FrameTooLargeError",
    "InvalidLengthError",
    "InvalidStringError",
    "InvalidVarintError",
    "ProtocolError",
    "RequestHeader",
    "ResponseHeader",
    "TrailingBytesError",
    "TruncatedError",
    "UnknownApiKeyError",
    "UnsupportedVersionError",
    "advertised_versions",
    "decode_request",
    "decode_response",
    "encode_api_versions_unsupported",
    "encode_request",
    "encode_response",
    "frame_size",
    "peek_request_header",
]
