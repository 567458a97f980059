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
