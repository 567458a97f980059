"""A fault-injecting wrapper around any ObjectStore, driven by a seeded RNG.

Faults, each drawn per operation from the injected `random.Random` (so a seed replays them):

- `fail_before`: the operation is refused before reaching the store -> Unavailable,
  nothing applied.
- `lose_response`: the operation is applied, then its response is lost -> Indeterminate
  for writes (put, delete); for reads the loss is just Unavailable.
- `latency=(lo, hi)`: each operation takes uniform(lo, hi) seconds, split at a random point
  into a request and a response leg (the operation applies in between), slept with
  `asyncio.sleep` so a virtual-time loop stays deterministic and instant.
- `corrupt_reads`: a read returns the object with one byte flipped (bit rot in transit).

Switches for recovery tests: `set_down(True)` fails every operation until `set_down(False)`
(an operation in flight when the replica goes down loses its response), and `corrupt(key)`
flips one byte of a stored object in the inner store.
"""
from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from s2core.errors import Indeterminate, InvalidArgument, S2Error, Unavailable
from s2core.objstore.base import ObjectStore

_T = TypeVar("_T")


class FaultyObjectStore:
    """Wraps `inner`; injects failures, lost responses, latency and corruption.

    `injected` counts the faults injected so far, by kind.
    """

    def __init__(self, inner: ObjectStore, rng: random.Random, *, fail_before: float = 0.0,
                 lose_response: float = 0.0, latency: tuple[float, float] = (0.0, 0.0),
                 corrupt_reads: float = 0.0) -> None:
        for p in (fail_before, lose_response, corrupt_reads):
            if not 0.0 <= p <= 1.0:
                raise InvalidArgument(f"probability {p} is not in [0, 1]")
        if not 0.0 <= latency[0] <= latency[1]:
            raise InvalidArgument(f"latency {latency} is not 0 <= lo <= hi")
        self.inner = inner
        self.name = f"faulty({inner.name})"
        self.rng = rng
        self.fail_before = fail_before
        self.lose_response = lose_response
        self.latency = latency
        self.corrupt_reads = corrupt_reads
        self.down = False
        self.injected: Counter[str] = Counter()

    def set_down(self, down: bool = True) -> None:
        """Take this replica fully down (every operation fails) or bring it back up."""
        self.down = down

    async def corrupt(self, key: str, index: int | None = None) -> int:
        """Flip (xor 0xFF) the byte at `index` (random if None) of the stored object.

        Returns the index. Works on the inner store directly, whatever the faults.
        """
        data = bytearray(await self.inner.get(key))
        if not data:
            raise InvalidArgument(f"cannot corrupt the empty object {key!r}")
        if index is None:
            index = self.rng.randrange(len(data))
        data[index] ^= 0xFF
        await self.inner.put(key, bytes(data))
        return index

    # -- the ObjectStore interface -----------------------------------------------------

    async def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        """The inner put, with faults."""
        await self._call(lambda: self.inner.put(key, data, if_absent=if_absent), write=True)

    async def get(self, key: str) -> bytes:
        """The inner get, with faults."""
        return self._maybe_corrupt(await self._call(lambda: self.inner.get(key), write=False))

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """The inner get_range, with faults."""
        data = await self._call(lambda: self.inner.get_range(key, start, end), write=False)
        return self._maybe_corrupt(data)

    async def list(self, prefix: str = "") -> list[str]:
        """The inner list, with faults (never corrupted)."""
        return await self._call(lambda: self.inner.list(prefix), write=False)

    async def delete(self, key: str) -> None:
        """The inner delete, with faults."""
        await self._call(lambda: self.inner.delete(key), write=True)

    async def close(self) -> None:
        """Close the inner store."""
        await self.inner.close()

    # -- helpers -----------------------------------------------------------------------

    def _roll(self, p: float) -> bool:
        return p > 0.0 and self.rng.random() < p

    async def _call(self, op: Callable[[], Awaitable[_T]], *, write: bool) -> _T:
        if self.down:
            self.injected["down"] += 1
            raise Unavailable(f"{self.name} is down")
        lo, hi = self.latency
        total = self.rng.uniform(lo, hi) if hi > 0.0 else 0.0
        request_leg = total * self.rng.random() if total > 0.0 else 0.0
        if request_leg > 0.0:
            await asyncio.sleep(request_leg)
        if self.down or self._roll(self.fail_before):
            self.injected["down" if self.down else "fail_before"] += 1
            raise Unavailable(f"{self.name}: injected failure before apply")
        error: S2Error | None = None
        try:
            result = await op()
        except S2Error as e:  # a definite answer (e.g. ObjectExists) can be lost too
            error = e
        if total - request_leg > 0.0:
            await asyncio.sleep(total - request_leg)
        if self.down or self._roll(self.lose_response):
            self.injected["down" if self.down else "lose_response"] += 1
            if write:
                raise Indeterminate(f"{self.name}: response lost after apply")
            raise Unavailable(f"{self.name}: response lost")
        if error is not None:
            raise error
        return result

    def _maybe_corrupt(self, data: bytes) -> bytes:
        if not data or not self._roll(self.corrupt_reads):
            return data
        self.injected["corrupt_read"] += 1
        flipped = bytearray(data)
        flipped[self.rng.randrange(len(flipped))] ^= 0xFF
        return bytes(flipped)


class FaultyMetadataStore:
    """Wraps a MetadataStore; each write (create, put, delete, write_batch) is refused with
    probability `fail_before` (Unavailable, nothing applied), or applied and its answer
    lost with probability `lose_response` (Indeterminate), as with a database that cannot
    be reached or a connection that drops before the commit is confirmed. A read (get,
    list_prefix) fails with probability `fail_reads` (Unavailable). `injected` counts the
    faults."""

    def __init__(self, inner, rng: random.Random, *, fail_before: float = 0.0,
                 lose_response: float = 0.0, fail_reads: float = 0.0) -> None:
        for p in (fail_before, lose_response, fail_reads):
            if not 0.0 <= p <= 1.0:
                raise InvalidArgument(f"probability {p} is not in [0, 1]")
        self.inner = inner
        self.rng = rng
        self.fail_before = fail_before
        self.lose_response = lose_response
        self.fail_reads = fail_reads
        self.injected = 0

    async def _write(self, call: Awaitable[_T]) -> _T:
        if self.fail_before and self.rng.random() < self.fail_before:
            call.close()
            self.injected += 1
            raise Unavailable("injected metadata failure before apply")
        out = await call
        if self.lose_response and self.rng.random() < self.lose_response:
            self.injected += 1
            raise Indeterminate("injected: metadata write applied, its answer lost")
        return out

    async def create(self, key, value):
        return await self._write(self.inner.create(key, value))

    async def put(self, key, value, expected_version):
        return await self._write(self.inner.put(key, value, expected_version))

    async def delete(self, key, expected_version=None):
        return await self._write(self.inner.delete(key, expected_version))

    async def write_batch(self, ops):
        return await self._write(self.inner.write_batch(ops))

    async def get(self, key):
        self._read_fault()
        return await self.inner.get(key)

    async def list_prefix(self, prefix, **kw):
        self._read_fault()
        return await self.inner.list_prefix(prefix, **kw)

    def _read_fault(self) -> None:
        if self.fail_reads and self.rng.random() < self.fail_reads:
            self.injected += 1
            raise Unavailable("injected metadata read failure")

    def __getattr__(self, name):  # close, ...
        return getattr(self.inner, name)
