"""JSON shapes of S2's API: records (raw or base64 per `s2-format`), acks, infos.

Pure functions. Shape errors (wrong JSON types, unknown or missing fields) are 400
bad_json; invalid values (bad base64, unknown format) are 422 invalid.
"""
from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from s2core.http.errors import bad_request, invalid
from s2core.http.proto import ParsedAppendInput
from s2core.records import AppendAck, AppendRecord, ReadBatch, SequencedRecord, StreamPosition

FORMATS = {"raw": "raw", "json": "raw", "base64": "base64", "json-binsafe": "base64"}


def parse_format(header: str | None) -> str:
    """The `s2-format` header: 'raw' (default) or 'base64'."""
    if header is None:
        return "raw"
    fmt = FORMATS.get(header.strip())
    if fmt is None:
        raise bad_request("bad_header", f"s2-format must be 'raw' or 'base64', not {header!r}")
    return fmt


def _decode(value: Any, fmt: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise bad_request("bad_json", f"{what} must be a string")
    if fmt == "raw":
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(f"{what} is not valid Unicode") from None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{what} is not valid base64") from None


def _encode(data: bytes, fmt: str) -> str:
    if fmt == "raw":
        return data.decode("utf-8", "replace")
    return base64.b64encode(data).decode("ascii")


def check_object(value: Any, what: str, allowed: set[str],
                  required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise bad_request("bad_json", f"{what} must be a JSON object")
    unknown = set(value) - allowed
    if unknown:
        raise bad_request("bad_json", f"unknown field(s) in {what}: {sorted(unknown)}")
    for k in required:
        if k not in value:
            raise bad_request("bad_json", f"{what} is missing the field {k!r}")
    return value


def _opt_u64(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 64:
        raise bad_request("bad_json", f"{what} must be an unsigned 64-bit integer")
    return value


def decode_append_input(value: Any, fmt: str) -> ParsedAppendInput:
    """An `AppendInput` JSON object in s2core terms."""
    obj = check_object(value, "AppendInput", {"records", "match_seq_num", "fencing_token"},
                        ("records",))
    if not isinstance(obj["records"], list):
        raise bad_request("bad_json", "records must be an array")
    records = []
    for i, r in enumerate(obj["records"]):
        rec = check_object(r, f"records[{i}]", {"timestamp", "headers", "body"})
        headers = []
        raw_headers = rec.get("headers") or []
        if not isinstance(raw_headers, list):
            raise bad_request("bad_json", f"records[{i}].headers must be an array")
        for h in raw_headers:
            if not isinstance(h, list) or len(h) != 2:
                raise bad_request("bad_json", "a header is a [name, value] pair")
            headers.append((_decode(h[0], fmt, "header name"), _decode(h[1], fmt, "header value")))
        body = _decode(rec.get("body", ""), fmt, "body") if rec.get("body") is not None else b""
        records.append(AppendRecord(body=body, headers=headers,
                                    timestamp=_opt_u64(rec.get("timestamp"), "timestamp")))
    token = obj.get("fencing_token")
    if token is not None and not isinstance(token, str):
        raise bad_request("bad_json", "fencing_token must be a string")
    return ParsedAppendInput(records, _opt_u64(obj.get("match_seq_num"), "match_seq_num"), token)


def position(p: StreamPosition) -> dict:
    return {"seq_num": p.seq_num, "timestamp": p.timestamp}


def append_ack(ack: AppendAck) -> dict:
    return {"start": position(ack.start), "end": position(ack.end), "tail": position(ack.tail)}


def sequenced_record(r: SequencedRecord, fmt: str) -> dict:
    out: dict[str, Any] = {"seq_num": r.seq_num, "timestamp": r.timestamp}
    if r.headers:
        out["headers"] = [[_encode(n, fmt), _encode(v, fmt)] for n, v in r.headers]
    if r.body:
        out["body"] = _encode(r.body, fmt)
    return out


def read_batch(batch: ReadBatch, fmt: str) -> dict:
    out: dict[str, Any] = {"records": [sequenced_record(r, fmt) for r in batch.records]}
    if batch.tail is not None:
        out["tail"] = position(batch.tail)
    return out


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def basin_info(name: str, created_at_ms: int, location: str) -> dict:
    return {"name": name, "created_at": rfc3339(created_at_ms), "deleted_at": None,
            "location": location}


def stream_info(name: str, created_at_ms: int, deleted_at_ms: int | None = None) -> dict:
    return {"name": name, "created_at": rfc3339(created_at_ms),
            "deleted_at": rfc3339(deleted_at_ms)}


def check_config_object(value: Any, what: str) -> dict | None:
    """A config object or null; deeper validation is s2core's (422 on invalid values)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("bad_json", f"{what} must be a JSON object or null")
    return value
