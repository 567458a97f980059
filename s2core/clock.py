"""Injected time. Core code never calls time.time() or asyncio.sleep() directly."""
from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Wall clock in milliseconds plus the loop's monotonic time for timers."""

    def now_ms(self) -> int: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class LoopClock:
    """A clock that follows the running event loop's time (virtual in simulations).

    Wall time is `epoch_ms` plus the loop's elapsed time, so a virtual-time loop gives a
    deterministic wall clock too.
    """

    def __init__(self, epoch_ms: int = 1_700_000_000_000) -> None:
        self._epoch_ms = epoch_ms
        self._t0: float | None = None

    def _loop_time(self) -> float:
        t = asyncio.get_running_loop().time()
        if self._t0 is None:
            self._t0 = t
        return t - self._t0

    def now_ms(self) -> int:
        return self._epoch_ms + int(self._loop_time() * 1000)

    def monotonic(self) -> float:
        return self._loop_time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_FREE_PIECE = 256  # objects freed between two ticks


class Slices:
    """Cooperative time slices for background CPU work on the loop (offload, garbage
    collection): `tick()` lets the loop run once `budget_s` has passed since the last
    hand-over, resting `rest_s` (a timer) so that the loop can run several iterations
    meanwhile: an append's ack takes a few loop iterations (WAL completion, quorum, lease
    check, publish), and a bare yield would let the background work take a slice between
    each of them. `behind()` (e.g. offload has fallen more than a batch behind) cuts the
    rest to a quarter; `urgent()` (e.g. the in-memory tail is full) stops the resting, and
    so does `quiet()` (no appends of late: the rests would leave the loop idle; a backlog
    of 10,000 streams took 6.5 s to offload that way, ~1.5 s without the rests).

    The work takes at most an eighth of the loop when nothing is behind: 0.25 ms slices
    with 2 ms rests. With a third of it (0.5 ms / 1 ms), the loop of the 1 KiB x
    10,000-stream benchmark (70% busy with appends) was overloaded for the length of an
    offload pass, and its ack p99 was 1.4 x higher (decision 0009).

    A thread would be worse: it holds the GIL for a whole switch interval at each turn,
    and the WAL writer needs the GIL after every system call. Time is the injected
    clock's, so a virtual-time loop never yields here and stays deterministic."""

    __slots__ = ("clock", "budget_s", "rest_s", "urgent", "behind", "quiet", "_until")

    def __init__(self, clock, budget_s: float = 0.00025, rest_s: float = 0.002,
                 urgent=None, behind=None, quiet=None) -> None:
        self.clock = clock
        self.budget_s = budget_s
        self.rest_s = rest_s
        self.urgent = urgent
        self.behind = behind
        self.quiet = quiet
        self._until = clock.monotonic() + budget_s

    async def free(self, *containers) -> None:
        """Empty lists and dicts a piece at a time, with ticks between. Freeing what an
        offload of 10,000 streams built (100,000s of objects) at once, as a function's
        return does, stalled the loop for 5-10 ms."""
        for c in containers:
            if isinstance(c, dict):
                while c:
                    for _ in range(min(len(c), _FREE_PIECE)):
                        _, v = c.popitem()
                        if type(v) is list and len(v) > _FREE_PIECE:
                            await self.free(v)
                    await self.tick()
            else:
                while c:
                    del c[-_FREE_PIECE:]
                    await self.tick()

    async def tick(self) -> None:
        if self.clock.monotonic() >= self._until:
            if self.rest_s and not (self.urgent is not None and self.urgent()) and \
                    not (self.quiet is not None and self.quiet()):
                rest = self.rest_s
                if self.behind is not None and self.behind():
                    rest /= 4
                await self.clock.sleep(rest)
            else:
                await asyncio.sleep(0)
            self._until = self.clock.monotonic() + self.budget_s
