"""Errors raised by s2core.

Definite failures (the operation did not happen) are distinct from indeterminate ones
(the operation may or may not have happened). Each name says who failed and what the
caller should do.
"""
from __future__ import annotations


class S2Error(Exception):
    """Base class of every s2core error."""

    code = "internal"
    retriable = False


class InvalidArgument(S2Error):
    """The caller sent something invalid; retrying the same request will fail again."""

    code = "invalid"


class NotFound(S2Error):
    """A basin, stream or object does not exist."""

    code = "not_found"


class BasinNotFound(NotFound):
    code = "basin_not_found"


class StreamNotFound(NotFound):
    code = "stream_not_found"


class AlreadyExists(S2Error):
    """A create found the resource already there."""

    code = "resource_already_exists"


class BeingDeleted(S2Error):
    """The resource is being deleted."""

    code = "being_deleted"


class LimitExceeded(InvalidArgument):
    """A record, batch or request is over a configured limit."""

    code = "limit_exceeded"


class SeqNumMismatch(S2Error):
    """`match_seq_num` did not match the stream's tail; carries the current tail seq_num."""

    code = "seq_num_mismatch"

    def __init__(self, expected: int, tail: int) -> None:
        super().__init__(f"match_seq_num {expected} does not match the tail {tail}")
        self.expected = expected
        self.tail = tail


class FencingTokenMismatch(S2Error):
    """The fencing token did not match; carries the stream's current token."""

    code = "fencing_token_mismatch"

    def __init__(self, given: str, current: str) -> None:
        super().__init__(f"fencing token {given!r} does not match the current token {current!r}")
        self.given = given
        self.current = current


class ReadPastTail(S2Error):
    """A read asked for a position beyond the tail (S2: 416); carries the tail."""

    code = "range_not_satisfiable"

    def __init__(self, tail_seq_num: int, tail_timestamp: int) -> None:
        super().__init__(f"start is beyond the tail {tail_seq_num}")
        self.tail_seq_num = tail_seq_num
        self.tail_timestamp = tail_timestamp


class Fenced(S2Error):
    """This writer lost its lease: a newer epoch owns the log. Definite; do not retry here."""

    code = "fenced"


class Sealed(S2Error):
    """The stream's current streamlet is sealed (being moved); retry shortly."""

    code = "sealed"
    retriable = True


class Unavailable(S2Error):
    """A dependency is unavailable; the operation definitely did not happen. Retriable."""

    code = "unavailable"
    retriable = True


class NotServed(Unavailable):
    """The stream's current streamlet is on a channel another process serves (or none
    does, for now): ask the one that does. Retriable."""

    code = "unavailable"


class Indeterminate(S2Error):
    """The operation may or may not have taken effect (e.g. a response was lost)."""

    code = "indeterminate"
    retriable = True


class Backpressure(S2Error):
    """Appends waited too long for memory in the tail (offload is behind). Retriable."""

    code = "backpressure"
    retriable = True


class Corrupt(S2Error):
    """Stored data failed its checksum on every copy; we refuse to serve it."""

    code = "corrupt"


class Closed(S2Error):
    """The store (or a session) was closed by its owner."""

    code = "closed"
