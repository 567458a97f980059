"""Exceptions raised by the protocol codec.

Names say whose fault it is (h11 style): every ``DecodeError`` means the peer sent bytes that
do not follow the Kafka protocol; ``EncodeError`` means *our* caller built a message that
cannot be serialised. "Need more data" is never an exception: see ``frames.frame_size``.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every codec error."""


class DecodeError(ProtocolError, ValueError):
    """The peer sent bytes that are not a valid Kafka message."""


class TruncatedError(DecodeError):
    """A field runs past the end of the frame (or the length prefix is too short)."""


class InvalidLengthError(DecodeError):
    """A length or element count is negative, null where not allowed, or larger than the
    bytes left in the frame."""


class InvalidVarintError(DecodeError):
    """A varint is longer than its type allows."""


class InvalidStringError(DecodeError):
    """A string field is not valid UTF-8."""


class TrailingBytesError(DecodeError):
    """Bytes remain after the message (or after a tagged field) was fully read."""


class FrameTooLargeError(DecodeError):
    """The 4-byte size prefix is negative or larger than the configured maximum."""


class UnknownApiKeyError(DecodeError):
    """The request names an API key this codec does not know."""

    def __init__(self, api_key: int, api_version: int, correlation_id: int) -> None:
        super().__init__(f"unknown api key {api_key} (version {api_version})")
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id


class UnsupportedVersionError(DecodeError):
    """The request uses a version of a known API that this codec cannot decode."""

    def __init__(self, api_key: int, api_version: int, correlation_id: int) -> None:
        super().__init__(f"api key {api_key}: unsupported version {api_version}")
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id


class CorruptRecordBatchError(DecodeError):
    """A record batch fails validation (size, magic, CRC, record count, ...)."""


class DecompressionLimitError(CorruptRecordBatchError):
    """A compressed record batch expands past the allowed size."""


class EncodeError(ProtocolError, ValueError):
    """The caller asked to encode a value that does not fit the wire format."""
