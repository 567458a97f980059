"""S2S session framing (s2s.md): length-prefixed, optionally compressed protobuf messages.

    [3-byte big-endian length of flag+body][flag: T CC A RRRR][body]

T ends the session (its body is a 2-byte status and a JSON error), CC is the compression
(0 none, 1 zstd, 2 gzip). Pure, in the style of h11: feed bytes in, take frames out; "need
more data" is a None, a protocol violation by the peer is a `BadFrame`.
"""
from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass

try:
    import zstandard
except ImportError:  # zstd is optional; sessions then negotiate gzip or none
    zstandard = None

NONE, ZSTD, GZIP = 0, 1, 2
TERMINAL = 0x80
_COMPRESSION_SHIFT = 5
_COMPRESSION_MASK = 0x60
MAX_FRAME = (1 << 24) - 1
COMPRESS_THRESHOLD = 1024  # s2s.md: messages under 1 KiB are not compressed


class BadFrame(Exception):
    """The peer sent bytes that are not a valid S2S frame."""


class TooLarge(BadFrame):
    """A message (or body) is larger than allowed once decompressed."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded message; `body` is decompressed."""

    terminal: bool
    body: bytes


class FrameDecoder:
    """Incremental decoder. `max_body` bounds a message's size after decompression."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more data is needed."""
        if len(self._buf) < 3:
            return None
        length = int.from_bytes(self._buf[:3], "big")
        if length == 0:
            raise BadFrame("frame without a flag byte")
        if length - 1 > self.max_body:
            raise BadFrame(f"frame of {length} bytes is too large")
        if len(self._buf) < 3 + length:
            return None
        flag = self._buf[3]
        body = bytes(self._buf[4:3 + length])
        del self._buf[:3 + length]
        if flag & TERMINAL:
            return Frame(True, body)
        body = decompress(body, (flag & _COMPRESSION_MASK) >> _COMPRESSION_SHIFT, self.max_body)
        return Frame(False, body)


def decompress(body: bytes, algo: int, max_size: int) -> bytes:
    """Undo a frame's compression, refusing output over `max_size` (no zip bombs)."""
    try:
        if algo == NONE:
            out = body
        elif algo == GZIP:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(body, max_size + 1)
            if not d.eof and len(out) <= max_size:
                raise BadFrame("truncated gzip data")
        elif algo == ZSTD and zstandard is not None:
            out = zstandard.ZstdDecompressor().decompress(body, max_output_size=max_size + 1)
        else:
            raise BadFrame(f"unsupported compression {algo}")
    except (zlib.error, EOFError) as exc:
        raise BadFrame(f"bad gzip data: {exc}") from None
    except Exception as exc:
        if zstandard is not None and isinstance(exc, zstandard.ZstdError):
            raise BadFrame(f"bad zstd data: {exc}") from None
        raise
    if len(out) > max_size:
        raise TooLarge(f"message larger than {max_size} bytes")
    return out


def negotiate(accept_encoding: str | None) -> int:
    """The compression to use for responses: zstd if offered (and available), else gzip."""
    offered = {p.split(";", 1)[0].strip().lower() for p in (accept_encoding or "").split(",")}
    if "zstd" in offered and zstandard is not None:
        return ZSTD
    if "gzip" in offered:
        return GZIP
    return NONE


def encode_message(body: bytes, algo: int = NONE) -> bytes:
    """Frame a regular message, compressing it with `algo` if it is large enough."""
    if algo != NONE and len(body) >= COMPRESS_THRESHOLD:
        if algo == ZSTD:
            assert zstandard is not None
            body = zstandard.ZstdCompressor().compress(body)
        else:
            body = gzip.compress(body, compresslevel=5)
    else:
        algo = NONE
    length = 1 + len(body)
    assert length <= MAX_FRAME, "message too large for an S2S frame"
    return length.to_bytes(3, "big") + bytes([algo << _COMPRESSION_SHIFT]) + body


def encode_terminal(status: int, error: dict) -> bytes:
    """The last message of a session: status code and the JSON error body."""
    body = status.to_bytes(2, "big") + json.dumps(error).encode()
    return (1 + len(body)).to_bytes(3, "big") + bytes([TERMINAL]) + body
