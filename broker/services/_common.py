"""Helpers shared by the service modules."""
from __future__ import annotations

from broker.protocol.errors import ErrorCode
from s2core import errors as s2

NO_AUTH_OPS = -2147483648  # "authorized operations not requested"


def kafka_error(e: Exception) -> ErrorCode:
    """The Kafka error code a client should see for an s2core error."""
    if isinstance(e, s2.StreamNotFound):
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if isinstance(e, s2.LimitExceeded):
        return ErrorCode.MESSAGE_TOO_LARGE
    if isinstance(e, s2.Sealed | s2.Fenced | s2.Closed | s2.NotServed):
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    if isinstance(e, s2.Indeterminate | s2.Backpressure | s2.Unavailable):
        return ErrorCode.REQUEST_TIMED_OUT
    if isinstance(e, s2.Corrupt):
        return ErrorCode.KAFKA_STORAGE_ERROR
    if isinstance(e, s2.InvalidArgument):
        return ErrorCode.INVALID_REQUEST
    return ErrorCode.UNKNOWN_SERVER_ERROR
