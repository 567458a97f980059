"""Server-Sent Events of S2's read sessions. Pure.

Events: `batch` (data: a JSON ReadBatch; id: "<last seq_num>,<records so far>,<bytes so
far>"), `ping` (data: {"timestamp": ms}) while idle, `error` (data: a JSON error) and a final
`[DONE]` data line when a bounded session completes. A client resumes by sending the last
id back as Last-Event-ID: the session restarts after that seq_num with its count and bytes
limits reduced by what was already delivered.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from s2core.http.errors import bad_request


@dataclass(frozen=True, slots=True)
class LastEventId:
    """Where a resumed session left off."""

    seq_num: int
    count: int
    bytes: int

    def __str__(self) -> str:
        return f"{self.seq_num},{self.count},{self.bytes}"


def parse_last_event_id(value: str | None) -> LastEventId | None:
    if value is None:
        return None
    parts = value.strip().split(",")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise bad_request("bad_header", "Last-Event-ID must be '<seq_num>,<count>,<bytes>'")
    return LastEventId(int(parts[0]), int(parts[1]), int(parts[2]))


def _event(name: str | None, data: str, event_id: str | None = None) -> bytes:
    lines = []
    if name is not None:
        lines.append(f"event: {name}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def batch_event(batch_json: dict, event_id: LastEventId) -> bytes:
    return _event("batch", json.dumps(batch_json), str(event_id))


def ping_event(timestamp_ms: int) -> bytes:
    return _event("ping", json.dumps({"timestamp": timestamp_ms}))


def error_event(error_body: dict) -> bytes:
    return _event("error", json.dumps(error_body))


def done_event() -> bytes:
    return _event(None, "[DONE]")
