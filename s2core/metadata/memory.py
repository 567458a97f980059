"""An in-memory metadata store for tests and simulations."""
from __future__ import annotations

import bisect

from s2core.errors import Closed, InvalidArgument
from s2core.metadata.base import Op, Versioned
from s2core.metadata.rules import check_key, check_ops, check_value, next_version


class MemoryMetadataStore:
    """A dict plus a lazily sorted key index; every operation is atomic (no awaits inside).

    The index is sorted only when a listing needs it, so creating a million keys costs no
    more than a million dict inserts; deleted keys stay in the index until they are over
    half of it.
    """

    def __init__(self) -> None:
        self._data: dict[str, Versioned] = {}
        self._index: list[str] = []  # every live key, plus some deleted ones; maybe unsorted
        self._indexed: set[str] = set()
        self._index_sorted = True
        self._closed = False

    async def get(self, key: str) -> Versioned | None:
        """The value and version, or None if absent."""
        self._check_open()
        return self._data.get(check_key(key))

    async def create(self, key: str, value: bytes) -> int:
        """Create-if-absent; returns 1. VersionMismatch if present."""
        return (await self.write_batch([Op("put", key, value, None)]))[0]

    async def put(self, key: str, value: bytes, expected_version: int) -> int:
        """Replace iff at `expected_version` (0: unconditionally); returns the new version."""
        return (await self.write_batch([Op("put", key, value, expected_version)]))[0]

    async def delete(self, key: str, expected_version: int | None = None) -> bool:
        """Delete (iff at `expected_version`, if given); returns whether it existed."""
        existed = check_key(key) in self._data
        await self.write_batch([Op("delete", key, None, expected_version)])
        return existed

    async def list_prefix(
        self, prefix: str, *, start_after: str = "", limit: int | None = None
    ) -> list[tuple[str, Versioned]]:
        """Keys with `prefix`, ascending, strictly after `start_after`, at most `limit`."""
        self._check_open()
        if limit is not None and limit < 0:
            raise InvalidArgument(f"negative limit {limit}")
        index = self._sorted_index()
        if start_after >= prefix:
            i = bisect.bisect_right(index, start_after)
        else:
            i = bisect.bisect_left(index, prefix)
        out: list[tuple[str, Versioned]] = []
        while i < len(index) and (limit is None or len(out) < limit):
            key = index[i]
            if not key.startswith(prefix):
                break
            item = self._data.get(key)
            if item is not None:
                out.append((key, item))
            i += 1
        return out

    async def write_batch(self, ops: list[Op]) -> list[int]:
        """Apply `ops` atomically, or raise VersionMismatch and apply none."""
        self._check_open()
        check_ops(ops)
        versions = [next_version(op, self._version(op.key)) for op in ops]
        for op, version in zip(ops, versions):
            if op.kind == "delete":
                self._data.pop(op.key, None)
                continue
            self._data[op.key] = Versioned(check_value(op.value), version)  # type: ignore[arg-type]
            if op.key not in self._indexed:
                self._indexed.add(op.key)
                self._index.append(op.key)
                self._index_sorted = False
        return versions

    async def close(self) -> None:
        """Further operations raise Closed."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("metadata store is closed")

    def _version(self, key: str) -> int | None:
        item = self._data.get(key)
        return None if item is None else item.version

    def _sorted_index(self) -> list[str]:
        if len(self._index) > 2 * len(self._data) + 1024:
            self._index = sorted(self._data)
            self._indexed = set(self._index)
        elif not self._index_sorted:
            self._index.sort()  # timsort: near-linear when only a tail was appended
        self._index_sorted = True
        return self._index
