"""The virtual-time event loop: instant sleeps, virtual timeouts, determinism."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from s2core.testing import LoopClock, VirtualLoopStalled, VirtualTimeEventLoop, run_virtual


def test_sleeping_an_hour_is_instant() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeEventLoop)
        t0 = loop.time()
        await asyncio.sleep(3600)
        return t0, loop.time()

    wall = time.monotonic()
    t0, t1 = run_virtual(main())
    assert time.monotonic() - wall < 1.0
    assert t1 - t0 == pytest.approx(3600)


def test_timers_fire_in_order_at_their_virtual_times() -> None:
    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[float, str]] = []
        loop.call_later(5, lambda: fired.append((loop.time(), "5s")))
        loop.call_later(86_400 * 3, lambda: fired.append((loop.time(), "3d")))
        loop.call_later(0.001, lambda: fired.append((loop.time(), "1ms")))
        cancelled = loop.call_later(1, lambda: fired.append((loop.time(), "cancelled")))
        cancelled.cancel()
        await asyncio.sleep(86_400 * 3 + 1)
        return fired

    assert run_virtual(main()) == [(0.001, "1ms"), (5.0, "5s"), (259_200.0, "3d")]


def test_timeouts_use_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.create_future(), timeout=30)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(12.5):
                await asyncio.Event().wait()
        return loop.time()

    assert run_virtual(main(), start_time=100.0) == pytest.approx(142.5)


def test_loop_clock_follows_virtual_time() -> None:
    async def main() -> tuple[int, int, float]:
        clock = LoopClock(epoch_ms=1_000_000)
        before = clock.now_ms()
        await clock.sleep(90)
        return before, clock.now_ms(), clock.monotonic()

    assert run_virtual(main()) == (1_000_000, 1_090_000, 90.0)


def test_threads_and_executors_still_work() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: (time.sleep(0.05), 7)[1])

    assert run_virtual(main()) == 7


def test_a_deadlock_is_reported_not_hung() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()  # nobody will ever set it

    with pytest.raises(VirtualLoopStalled):
        run_virtual(main(), stall_timeout=0.2)


async def _workers(n_tasks: int, steps: int, draw_from_loop: bool) -> list[tuple[float, int]]:
    """Tasks that interleave through random sleeps; returns (time, task) per step."""
    loop = asyncio.get_running_loop()
    rng = loop.rng if draw_from_loop else random.Random(1)  # type: ignore[attr-defined]
    trace: list[tuple[float, int]] = []

    async def worker(i: int) -> None:
        for _ in range(steps):
            await asyncio.sleep(rng.choice([0, 0, 0.5, rng.uniform(0, 2)]))
            trace.append((loop.time(), i))

    async with asyncio.TaskGroup() as tg:
        for i in range(n_tasks):
            tg.create_task(worker(i))
    return trace


def test_same_seed_same_trace() -> None:
    first = run_virtual(_workers(8, 40, draw_from_loop=True), seed=42)
    second = run_virtual(_workers(8, 40, draw_from_loop=True), seed=42)
    other = run_virtual(_workers(8, 40, draw_from_loop=True), seed=43)
    assert first == second
    assert first != other
    assert len(first) == 320


def test_shuffle_explores_interleavings_deterministically() -> None:
    async def ready_together() -> list[int]:
        order: list[int] = []

        async def step(i: int) -> None:
            order.append(i)

        await asyncio.gather(*(step(i) for i in range(10)))
        return order

    fifo = run_virtual(ready_together(), seed=1)
    assert fifo == list(range(10))  # asyncio's order without shuffle
    orders = {tuple(run_virtual(ready_together(), seed=s, shuffle=True)) for s in range(5)}
    assert len(orders) > 1
    for s in range(5):
        assert run_virtual(ready_together(), seed=s, shuffle=True) == run_virtual(
            ready_together(), seed=s, shuffle=True)
    # Same rng draws in the program, different interleavings per seed.
    shuffled = {tuple(run_virtual(_workers(6, 10, draw_from_loop=False), seed=s,
                                  shuffle=True)) for s in range(4)}
    assert len(shuffled) > 1
