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
