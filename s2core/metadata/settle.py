"""Settling writes whose answer was lost.

A metadata write can fail after it committed (the connection drops before the commit is
confirmed, a commit reports an I/O error): the store raises Indeterminate. The caller
then still holds the row versions it had, and if the write did apply, every later
conditional write with them fails with VersionMismatch: a stream stays sealed because no
move can write its checkpoint, a channel's offload publish fences the channel itself
(simulation seed 712306 found the first).

`SettlingMetadataStore` wraps a store; when a write raises Indeterminate it reads the
written keys back. If every put of the write holds the value written (and every deleted
key is absent), the write applied: the call returns as if the answer had come, with the
versions read back. Otherwise (not applied, applied and changed since, or reads failing
for a few seconds) the Indeterminate stands and the caller handles it as before. Values are compared whole,
and every value the store writes names its writer or its content (an epoch and owner,
a checkpoint, a stream row with its uid): another writer's identical value would be the
same state anyway.

Reading back costs a read per key of the write, only after a lost answer.
"""
from __future__ import annotations

import asyncio
from typing import Any

from s2core.errors import Closed, Indeterminate, S2Error
from s2core.metadata.base import Op


READ_BACK_ATTEMPTS = 10  # 5 ms doubling to 1 s: about 3 s of failed reads in all


class SettlingMetadataStore:
    """A MetadataStore whose writes settle lost answers by reading back (see module doc)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.settled = 0  # writes whose lost answer was settled as applied

    async def create(self, key: str, value: bytes) -> int:
        try:
            return await self.inner.create(key, value)
        except Indeterminate as e:
            return (await self._settle([Op("put", key, value)], e))[0]

    async def put(self, key: str, value: bytes, expected_version: int) -> int:
        try:
            return await self.inner.put(key, value, expected_version)
        except Indeterminate as e:
            return (await self._settle([Op("put", key, value, expected_version)], e))[0]

    async def delete(self, key: str, expected_version: int | None = None) -> bool:
        try:
            return await self.inner.delete(key, expected_version)
        except Indeterminate as e:
            await self._settle([Op("delete", key, None, expected_version)], e)
            return True

    async def write_batch(self, ops: list[Op]) -> list[int]:
        try:
            return await self.inner.write_batch(ops)
        except Indeterminate as e:
            return await self._settle(ops, e)

    async def _settle(self, ops: list[Op], lost: Indeterminate) -> list[int]:
        versions = []
        for op in ops:
            row = await self._read_back(op.key, lost)
            if op.kind == "delete":
                if row is not None:
                    raise lost
                versions.append(0)
            elif row is None or row.value != op.value or \
                    (op.expected_version and row.version <= op.expected_version):
                raise lost
            else:
                versions.append(row.version)
        self.settled += 1
        return versions

    async def _read_back(self, key: str, lost: Indeterminate):
        """The row of `key`; a read that fails is retried for a few seconds (the store
        that lost the answer is often briefly unreachable too), then `lost` stands."""
        delay = 0.005
        for _ in range(READ_BACK_ATTEMPTS):
            try:
                return await self.inner.get(key)
            except Closed:
                break
            except (S2Error, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise lost

    def __getattr__(self, name: str) -> Any:  # get, list_prefix, close, path, ...
        return getattr(self.inner, name)
