"""The query of a read (unary or session): where to start, when to stop, how long to wait."""
from __future__ import annotations

from dataclasses import dataclass

from s2core.http.asgi import Request
from s2core.http.errors import bad_request, invalid

# a unary read (and each batch of a session) returns at most this much
UNARY_MAX_RECORDS = 1000
UNARY_MAX_BYTES = 1024 * 1024
_READ_PARAMS = {"seq_num", "timestamp", "tail_offset", "clamp", "count", "bytes", "until",
                "wait"}


@dataclass
class ReadParams:
    """The query of a read: where to start, when to stop, how long to wait."""

    seq_num: int | None = None
    timestamp: int | None = None
    tail_offset: int | None = None
    clamp: bool = False
    count: int | None = None
    bytes: int | None = None
    until: int | None = None
    wait: int | None = None

    def start_args(self) -> dict:
        return {"seq_num": self.seq_num, "timestamp": self.timestamp,
                "tail_offset": self.tail_offset, "clamp": self.clamp}

    def bounded(self) -> bool:
        return self.count is not None or self.bytes is not None or self.until is not None


def parse_read_params(req: Request) -> ReadParams:
    q = req.query
    unknown = set(q) - _READ_PARAMS
    if unknown:
        raise bad_request("bad_query", f"unknown query parameter(s): {sorted(unknown)}")
    p = ReadParams()
    for key in ("seq_num", "timestamp", "tail_offset", "count", "bytes", "until", "wait"):
        if key in q:
            if not q[key].isdigit() or int(q[key]) >= 2 ** 64:
                raise bad_request("bad_query", f"{key} must be an unsigned integer")
            setattr(p, key, int(q[key]))
    if "clamp" in q:
        if q["clamp"] not in ("true", "false"):
            raise bad_request("bad_query", "clamp must be true or false")
        p.clamp = q["clamp"] == "true"
    if sum(x is not None for x in (p.seq_num, p.timestamp, p.tail_offset)) > 1:
        raise bad_request("bad_query", "give at most one of seq_num, timestamp, tail_offset")
    # 0 means "no limit" for count and bytes
    p.count = p.count or None
    p.bytes = p.bytes or None
    if p.timestamp is not None and p.until is not None and p.timestamp >= p.until:
        raise invalid("start timestamp must be less than until")
    return p
