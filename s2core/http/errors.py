"""HTTP errors of the S2 API and the translation of s2core's errors into them.

Every error the API answers is an `HttpError`: a status and a JSON body, which is S2's
`ErrorInfo` ({"code", "message"}) except for the two bodies the SDK parses specially: 412
(`AppendConditionFailed`) and 416 (`TailResponse`). Codes follow S2's error codes: malformed
requests are 400 (bad_json, bad_proto, bad_header, bad_query, bad_path, bad_frame), valid
requests with invalid content are 422 (invalid), conflicts 409, retriable failures 503.
"""
from __future__ import annotations

import json

from s2core import errors as e
from s2core.metadata.base import VersionMismatch


class HttpError(Exception):
    """An error response: status, JSON body and extra headers."""

    def __init__(self, status: int, code: str, message: str, *, body: dict | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body if body is not None else {"code": code, "message": message}
        self.headers = headers

    def json_bytes(self) -> bytes:
        return json.dumps(self.body).encode()


def bad_request(code: str, message: str) -> HttpError:
    """A malformed request (400) with one of S2's bad_* codes."""
    assert code.startswith("bad_"), code
    return HttpError(400, code, message)


def invalid(message: str) -> HttpError:
    """A well-formed request whose content is invalid (422)."""
    return HttpError(422, "invalid", message)


def from_store_error(err: Exception) -> HttpError:
    """Translate an s2core error (or an unexpected exception) into the API's answer."""
    if isinstance(err, HttpError):
        return err
    if isinstance(err, e.SeqNumMismatch):
        return HttpError(412, "seq_num_mismatch", str(err),
                         body={"seq_num_mismatch": err.tail})
    if isinstance(err, e.FencingTokenMismatch):
        return HttpError(412, "fencing_token_mismatch", str(err),
                         body={"fencing_token_mismatch": err.current})
    if isinstance(err, e.ReadPastTail):
        return HttpError(416, "range_not_satisfiable", str(err),
                         body={"tail": {"seq_num": err.tail_seq_num,
                                        "timestamp": err.tail_timestamp}})
    if isinstance(err, e.NotFound):
        return HttpError(404, err.code, str(err))
    if isinstance(err, e.AlreadyExists):
        return HttpError(409, "resource_already_exists", str(err))
    if isinstance(err, e.BeingDeleted):
        return HttpError(409, "stream_deletion_pending", str(err))
    if isinstance(err, VersionMismatch):
        # A concurrent metadata write won; S2 calls this a transaction conflict (retriable).
        return HttpError(409, "transaction_conflict", str(err))
    if isinstance(err, e.InvalidArgument):
        return invalid(str(err))
    if isinstance(err, (e.Sealed, e.Unavailable, e.Backpressure, e.Fenced, e.Closed)):
        # Definite failures: the operation did not happen, so a retry is safe.
        return HttpError(503, "unavailable", str(err), headers=(("retry-after-ms", "100"),))
    if isinstance(err, e.Indeterminate):
        # "other", not "unavailable": S2 promises unavailable is free of side effects.
        return HttpError(500, "other", str(err))
    if isinstance(err, e.Corrupt):
        return HttpError(500, "storage", str(err))
    return HttpError(500, "other", f"internal error: {type(err).__name__}")
