"""Records as appended and as read, command records, and S2's size metering."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from s2core.errors import InvalidArgument

Header = tuple[bytes, bytes]

MAX_FENCING_TOKEN_BYTES = 36


@dataclass(slots=True)
class AppendRecord:
    """A record to append. `span` > 1 makes it occupy several sequence numbers."""

    body: bytes | memoryview = b""
    headers: tuple[Header, ...] | list[Header] = ()
    timestamp: int | None = None
    span: int = 1


class SequencedRecord(NamedTuple):
    """A durable record: occupies seq_nums [seq_num, seq_num + span).

    A named tuple, so that the in-memory tail can keep each record as a plain tuple of the
    same fields (see StreamState.mem_recs) and hand it out as this type at no cost."""

    seq_num: int
    timestamp: int
    headers: tuple[Header, ...]
    body: bytes
    span: int = 1

    @property
    def end_seq(self) -> int:
        return self.seq_num + self.span

    def is_command(self) -> bool:
        return len(self.headers) == 1 and self.headers[0][0] == b""


# Positions of SequencedRecord's fields in a tail entry (a plain tuple of them)
SEQ, TS, HEADERS, BODY, SPAN = range(5)


@dataclass(slots=True, unsafe_hash=True)  # not frozen: a frozen init costs 4x (hot path)
class StreamPosition:
    """A seq_num and the timestamp that goes with it (S2's StreamPosition)."""

    seq_num: int
    timestamp: int


@dataclass(slots=True, unsafe_hash=True)  # not frozen: a frozen init costs 4x (hot path)
class AppendAck:
    """Acknowledgement of a durable append: [start, end) and the tail at ack time."""

    start: StreamPosition
    end: StreamPosition
    tail: StreamPosition


@dataclass(slots=True)
class ReadBatch:
    """Records read, and the tail when the read reached recent records."""

    records: list[SequencedRecord] = field(default_factory=list)
    tail: StreamPosition | None = None


def metered_size(headers, body) -> int:
    """S2's metered bytes: 8 + 2 per header + header names/values + body."""
    n = 8 + len(body)
    for name, value in headers:
        n += 2 + len(name) + len(value)
    return n


def fence_record(token: str, timestamp: int | None = None) -> AppendRecord:
    """A `fence` command record setting the stream's fencing token."""
    raw = token.encode()
    if len(raw) > MAX_FENCING_TOKEN_BYTES:
        raise InvalidArgument(f"fencing token longer than {MAX_FENCING_TOKEN_BYTES} bytes")
    return AppendRecord(body=raw, headers=((b"", b"fence"),), timestamp=timestamp)


def trim_record(seq_num: int, timestamp: int | None = None) -> AppendRecord:
    """A `trim` command record moving the stream's first readable seq_num."""
    if seq_num < 0:
        raise InvalidArgument("trim point must be >= 0")
    return AppendRecord(body=seq_num.to_bytes(8, "big"), headers=((b"", b"trim"),),
                        timestamp=timestamp)


def parse_command(headers, body) -> tuple[str, str | int] | None:
    """Return ("fence", token) or ("trim", seq) for a command record, None for data.

    Raises InvalidArgument for a malformed command record (S2 answers 422).
    """
    if not headers or headers[0][0] != b"":
        for name, _ in headers:
            if name == b"":
                raise InvalidArgument("an empty header name is reserved for command records")
        return None
    if len(headers) != 1:
        raise InvalidArgument("a command record has exactly one header")
    op = bytes(headers[0][1])
    if op == b"fence":
        if len(body) > MAX_FENCING_TOKEN_BYTES:
            raise InvalidArgument(f"fencing token longer than {MAX_FENCING_TOKEN_BYTES} bytes")
        try:
            return ("fence", bytes(body).decode())
        except UnicodeDecodeError as e:
            raise InvalidArgument("fencing token is not UTF-8") from e
    if op == b"trim":
        if len(body) != 8:
            raise InvalidArgument("trim command body must be an 8-byte big-endian seq_num")
        return ("trim", int.from_bytes(body, "big"))
    raise InvalidArgument(f"unknown command record {op!r}")
