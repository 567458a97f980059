"""A deterministic virtual-time asyncio event loop for simulations.

The loop's selector never waits for time to pass: when no callback is ready and no I/O
event is pending, it moves the loop's clock straight to the next scheduled timer. So
`await asyncio.sleep(3600)` returns at once in wall time while `loop.time()` advances by
3600, and timeouts (`asyncio.timeout`, `wait_for`) fire in virtual time too.

Same program + same seed -> same order of events, provided the program takes its time and
randomness from the loop (`loop.time()`, s2core.clock.LoopClock, a seeded Random) and
does no real I/O or thread work whose timing matters. Iterating a set of tasks (e.g. from
`asyncio.wait`) visits them in memory-address order, which differs between runs: iterate
in creation order instead.

With `shuffle=True`, the callbacks that became ready in one loop iteration run in an
order shuffled by the seed, so different seeds explore different interleavings of
concurrent tasks (as FoundationDB's simulator does). This breaks asyncio's promise that
`call_soon` callbacks run in registration order, so it is opt-in: code relying on that
promise will misbehave under it. By default the order is asyncio's FIFO.

Real I/O and threads still work (the selector still polls, and blocks for real when
nothing is scheduled), which is what `run_in_executor` needs; only their timing is outside
the simulation.
"""
from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class VirtualLoopStalled(RuntimeError):
    """No callback ready, no timer scheduled and no I/O for `stall_timeout` wall seconds:
    every task waits for something that nothing will do (a deadlock in the simulation)."""


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """Polls without blocking; when idle, jumps the loop's clock to the next timer."""

    def __init__(self, stall_timeout: float | None) -> None:
        super().__init__()
        self.loop: VirtualTimeEventLoop | None = None
        self.stall_timeout = stall_timeout

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self.loop
        assert loop is not None
        loop._shuffle_ready()
        if timeout is None:
            # Nothing ready and no timers: only I/O or another thread can wake us.
            events = super().select(self.stall_timeout)
            if not events:
                raise VirtualLoopStalled(
                    f"virtual loop idle for {self.stall_timeout}s of wall time with no "
                    "timers: every task is waiting for something that cannot happen")
            return events
        events = super().select(0)
        if not events and timeout > 0:
            loop._advance_to_next_timer()
        return events


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose `time()` is virtual and jumps to the next timer when idle.

    `rng` is a Random seeded with `seed` for the simulated program to use. With `shuffle`,
    ready callbacks run in an order drawn from a separate generator seeded with `seed` (so
    drawing from `rng` does not change the interleaving); see the module docstring.
    """

    def __init__(self, *, seed: int | None = None, shuffle: bool = False,
                 start_time: float = 0.0, stall_timeout: float | None = 60.0) -> None:
        self._virtual_now = float(start_time)
        selector = _VirtualSelector(stall_timeout)
        super().__init__(selector)
        selector.loop = self
        self.seed = seed
        self.rng = random.Random(seed)
        self._schedule_rng = random.Random(f"schedule/{seed}") if shuffle else None

    def time(self) -> float:
        """The virtual monotonic time in seconds."""
        return self._virtual_now

    def _advance_to_next_timer(self) -> None:
        # asyncio's loop dropped cancelled timers from the head of the heap before asking
        # the selector to wait, so the head is the next timer that will really fire.
        if self._scheduled:  # type: ignore[attr-defined]
            head = self._scheduled[0]  # type: ignore[attr-defined]
            assert not head.cancelled(), "asyncio left a cancelled timer at the heap's head"
            self._virtual_now = max(self._virtual_now, head.when())

    def _shuffle_ready(self) -> None:
        ready = self._ready  # type: ignore[attr-defined]
        if self._schedule_rng is not None and len(ready) > 1:
            handles = list(ready)
            self._schedule_rng.shuffle(handles)
            ready.clear()
            ready.extend(handles)


def run_virtual(coro: Coroutine[Any, Any, _T], seed: int | None = 0, *, shuffle: bool = False,
                start_time: float = 0.0, stall_timeout: float | None = 60.0) -> _T:
    """Run `coro` to completion on a fresh VirtualTimeEventLoop (like `asyncio.run`).

    Inside, `asyncio.get_running_loop().rng` is a Random seeded with `seed`.
    """
    with asyncio.Runner(loop_factory=lambda: VirtualTimeEventLoop(
            seed=seed, shuffle=shuffle, start_time=start_time,
            stall_timeout=stall_timeout)) as runner:
        return runner.run(coro)
