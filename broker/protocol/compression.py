"""Record batch compression codecs (gzip, snappy raw + xerial, lz4 frame, zstd) via cramjam,
with a hard cap on decompressed size so a small batch cannot expand into a huge allocation."""

from __future__ import annotations

import struct
from enum import IntEnum

import cramjam

from broker.protocol.exceptions import CorruptRecordBatchError, DecompressionLimitError

#: Default cap on the decompressed size of one batch.
DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024

# The framing of xerial snappy-java's SnappyOutputStream (what the Java client writes).
XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = struct.Struct(">8sii")
_XERIAL_BLOCK = 32 * 1024
_I32 = struct.Struct(">i")
_FIRST_GUESS = 64 * 1024
_CRAMJAM_ERRORS = (cramjam.DecompressionError, OSError, ValueError)


class Compression(IntEnum):
    """Codec id in the low three bits of a batch's attributes."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


_MODULES = {Compression.GZIP: cramjam.gzip, Compression.LZ4: cramjam.lz4,
            Compression.ZSTD: cramjam.zstd}


def compress(codec: Compression, data: bytes | bytearray | memoryview) -> bytes:
    """Compress ``data`` the way the Java client does (snappy: xerial framing)."""
    if codec == Compression.NONE:
        return bytes(data)
    if codec == Compression.SNAPPY:
        out = bytearray(_XERIAL_HEADER.pack(XERIAL_MAGIC, 1, 1))
        view = memoryview(data)
        for start in range(0, len(view), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(view[start:start + _XERIAL_BLOCK]))
            out += _I32.pack(len(block))
            out += block
        return bytes(out)
    return bytes(_MODULES[codec].compress(bytes(data)))


def decompress(codec: Compression, data: bytes | bytearray | memoryview,
               max_size: int = DEFAULT_MAX_DECOMPRESSED) -> bytes | memoryview:
    """Decompress one batch's records section; at most ``max_size`` bytes come out.

    Raises DecompressionLimitError past the cap and CorruptRecordBatchError for bad input.
    """
    if codec == Compression.NONE:
        return data if isinstance(data, memoryview) else memoryview(data)
    if codec == Compression.SNAPPY:
        return _snappy(bytes(data), max_size)
    module = _MODULES.get(codec)  # type: ignore[call-overload]
    if module is None:
        raise CorruptRecordBatchError(f"unknown compression codec {int(codec)}")
    return _bounded(module, bytes(data), max_size)


def _bounded(module: object, data: bytes, max_size: int) -> memoryview:
    # decompress_into stops when the output buffer is full, so memory and work stay bounded;
    # grow the buffer geometrically up to the cap.
    size = min(max_size + 1, max(_FIRST_GUESS, 4 * len(data)))
    while True:
        out = bytearray(size)
        try:
            n = module.decompress_into(data, out)  # type: ignore[attr-defined]
        except _CRAMJAM_ERRORS as exc:
            if "failed to write whole buffer" not in str(exc):
                raise CorruptRecordBatchError(f"cannot decompress batch: {exc}") from None
            if size > max_size:
                raise DecompressionLimitError(
                    f"batch expands past {max_size} bytes") from None
            size = min(max_size + 1, size * 4)
            continue
        if n > max_size:
            raise DecompressionLimitError(f"batch expands past {max_size} bytes")
        return memoryview(out)[:n]


def _snappy_raw(block: bytes, budget: int) -> bytes:
    try:
        n = cramjam.snappy.decompress_raw_len(block)
    except _CRAMJAM_ERRORS as exc:
        raise CorruptRecordBatchError(f"bad snappy block: {exc}") from None
    if n > budget:
        raise DecompressionLimitError("snappy batch expands past the cap")
    try:
        return bytes(cramjam.snappy.decompress_raw(block))
    except _CRAMJAM_ERRORS as exc:
        raise CorruptRecordBatchError(f"bad snappy block: {exc}") from None


def _snappy(data: bytes, max_size: int) -> bytes:
    if not data.startswith(XERIAL_MAGIC):
        return _snappy_raw(data, max_size)
    pos = _XERIAL_HEADER.size
    if len(data) < pos:
        raise CorruptRecordBatchError("truncated xerial snappy header")
    out = bytearray()
    while pos < len(data):
        if pos + 4 > len(data):
            raise CorruptRecordBatchError("truncated xerial snappy block length")
        (n,) = _I32.unpack_from(data, pos)
        pos += 4
        if n < 0 or pos + n > len(data):
            raise CorruptRecordBatchError("xerial snappy block runs past the batch")
        out += _snappy_raw(data[pos:pos + n], max_size - len(out))
        pos += n
    return bytes(out)
