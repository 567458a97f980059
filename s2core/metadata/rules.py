"""The semantics every MetadataStore shares, as pure functions: op validation, the version a
conditional write produces, and the key range that a prefix covers.

Keys order by Unicode code point (Python's str order), which equals the byte order of
their UTF-8 encoding — the order SQLite's BINARY collation, PostgreSQL's "C" collation and
DynamoDB sort keys use — so every backend lists in the same order.
"""
from __future__ import annotations

from s2core.errors import InvalidArgument
from s2core.metadata.base import Op, VersionMismatch

OP_KINDS = ("put", "delete")
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def check_key(key: str) -> str:
    """Return `key` if it is a non-empty str encodable as UTF-8, else InvalidArgument."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"metadata key must be a non-empty str, got {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument(f"metadata key is not valid UTF-8: {key!r}") from e
    return key


def check_value(value: bytes) -> bytes:
    """The value as immutable bytes; InvalidArgument if it is not bytes-like."""
    _check_value_type(value)
    return bytes(value)


def _check_value_type(value) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"metadata value must be bytes, got {type(value).__name__}")


def check_ops(ops: list[Op]) -> list[Op]:
    """Validate a write batch; each key may appear once (as in DynamoDB transactions)."""
    seen: set[str] = set()
    for op in ops:
        if op.kind not in OP_KINDS:
            raise InvalidArgument(f"unknown op kind {op.kind!r}")
        check_key(op.key)
        if op.key in seen:
            raise InvalidArgument(f"key {op.key!r} appears twice in one batch")
        seen.add(op.key)
        if op.kind == "put":
            _check_value_type(op.value)  # (stores copy values once, where they keep them)
        if op.expected_version is not None and (
                not isinstance(op.expected_version, int) or op.expected_version < 0):
            raise InvalidArgument(f"bad expected_version {op.expected_version!r}")
    return ops


def next_version(op: Op, current: int | None) -> int:
    """The version `op` leaves behind given the key's `current` one (None: absent).

    Returns 0 for a delete. Raises VersionMismatch when the op's condition does not hold.
    put: expected None = create-if-absent, 0 = unconditional, n = must be at n.
    delete: expected None = unconditional, n = must be at n.
    """
    expected = op.expected_version
    if op.kind == "put":
        if expected is None:
            if current is not None:
                raise VersionMismatch(op.key, None, current)
            return 1
        if expected == 0:
            return (current or 0) + 1
        if current != expected:
            raise VersionMismatch(op.key, expected, current)
        return expected + 1
    assert op.kind == "delete", op
    if expected is not None and current != expected:
        raise VersionMismatch(op.key, expected, current)
    return 0


def prefix_end(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix` (None: unbounded).

    So `prefix <= key < prefix_end(prefix)` selects exactly the keys with that prefix, as a
    range an index can serve (LIKE would treat '%' and '_' in keys as wildcards).
    """
    stripped = prefix.rstrip(chr(_MAX_CODE_POINT))
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if last in _SURROGATES:  # not encodable; the next code point that is
        last = _SURROGATES.stop
    return stripped[:-1] + chr(last)
