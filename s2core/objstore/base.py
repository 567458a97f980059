"""The object store interface.

Chunk replicas and segment storage are both object stores: a local directory (write +
fdatasync before `put` returns), an S3 API bucket, or memory. Every write is either
create-if-absent or an explicit overwrite, so a zombie writer can never silently clobber.
"""
from __future__ import annotations

from typing import Protocol

from s2core.errors import S2Error


class PreconditionError(S2Error):
    """A conditional object write failed its condition."""

    code = "precondition_failed"


class ObjectExists(PreconditionError):
    """`put(if_absent=True)` found the key already present."""


class ObjectNotFound(S2Error):
    """`get` of a key that does not exist."""

    code = "object_not_found"


class ObjectStore(Protocol):
    """A flat key -> bytes store. `put` returns only once the object is durable.

    Keys follow s2core.objstore.keys.check_key ('/'-separated non-empty segments, no '.'
    or '..', at most 1024 UTF-8 bytes; the local directory also reserves segments starting
    with '.s2tmp-') on every backend; others raise InvalidArgument.
    Failures are s2core errors: Unavailable (definitely not applied, retry), Indeterminate
    (a write that may or may not have been applied), Closed (after `close`).
    """

    name: str

    async def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        """Store `data` under `key`. With `if_absent`, raise ObjectExists if present."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the object's bytes; raise ObjectNotFound if absent."""
        ...

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Return bytes [start, end) of the object; raise ObjectNotFound if absent.

        `end` past the object's size is clamped (as `data[start:end]`); 0 <= start <= end
        is required (InvalidArgument otherwise).
        """
        ...

    async def list(self, prefix: str = "") -> list[str]:
        """All keys starting with `prefix`, sorted."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; deleting an absent key is not an error."""
        ...

    async def close(self) -> None:
        """Release connections or threads."""
        ...
