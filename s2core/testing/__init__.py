"""Simulation support: virtual time, fault injection, and a clock that follows the loop.

Run a scenario with `run_virtual(main(), seed)`; inject `LoopClock()` as the clock and wrap
object stores in `FaultyObjectStore(store, rng, ...)` with an RNG derived from the seed.
"""
from s2core.clock import LoopClock
from s2core.testing.faults import FaultyObjectStore
from s2core.testing.virtual_loop import VirtualLoopStalled, VirtualTimeEventLoop, run_virtual

__all__ = [
    "FaultyObjectStore",
    "LoopClock",
    "VirtualLoopStalled",
    "VirtualTimeEventLoop",
    "run_virtual",
]
