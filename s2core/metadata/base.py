"""The metadata store interface.

Everything s2core keeps outside the WAL and segments — basins, stream configs, streamlet
chains, leases, segment catalogs — lives behind this minimal interface so it can be served
by SQLite (embedded), PostgreSQL or DynamoDB. Every value carries a version (a positive
integer bumped on each write); writes that matter for safety are conditional on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from s2core.errors import S2Error


class VersionMismatch(S2Error):
    """A conditional write found a different version (or presence) than expected."""

    code = "version_mismatch"

    def __init__(self, key: str, expected: int | None, actual: int | None) -> None:
        super().__init__(f"{key}: expected version {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class Versioned:
    """A value and its version."""

    value: bytes
    version: int


class Op(NamedTuple):
    """One conditional write in a batch (a tuple: an offload builds 20,000 of them).

    kind: "put" (value required; `expected_version` None means create-if-absent,
    0 means unconditional, n means must currently be at version n) or "delete"
    (`expected_version` None means unconditional).
    """

    kind: str
    key: str
    value: bytes | None = None
    expected_version: int | None = None


class MetadataStore(Protocol):
    """Conditional key-value storage with prefix listing; keys are str, values bytes."""

    async def get(self, key: str) -> Versioned | None:
        """The value and version, or None if absent."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Create-if-absent; returns the new version (1). Raises VersionMismatch if present."""
        ...

    async def put(self, key: str, value: bytes, expected_version: int) -> int:
        """Replace iff the current version is `expected_version`; returns the new version.

        Raises VersionMismatch otherwise (including when the key is absent).
        `expected_version=0` means unconditional (create or replace), as in `Op`.
        """
        ...

    async def delete(self, key: str, expected_version: int | None = None) -> bool:
        """Delete (conditionally if `expected_version` is given). Returns whether it existed."""
        ...

    async def list_prefix(
        self, prefix: str, *, start_after: str = "", limit: int | None = None
    ) -> list[tuple[str, Versioned]]:
        """Keys with `prefix`, ascending, strictly after `start_after`, at most `limit`."""
        ...

    async def write_batch(self, ops: list[Op]) -> list[int]:
        """Apply `ops` atomically: all conditions hold and all apply, or VersionMismatch.

        Returns the new version per op (0 for deletes).
        """
        ...

    async def close(self) -> None: ...
