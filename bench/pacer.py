"""Open-loop load generator clock, run as its own process.

    python bench/pacer.py START INTERVAL SECONDS

START "-" means: read it from stdin (one line) once it is known, so that the benchmark
can start this process ahead of time and go from one measurement to the next without
the pause of an interpreter start (a pause the store would spend idle).

Writes to stdout, as native-endian float64s, the due times START, START + INTERVAL, ...
(CLOCK_MONOTONIC seconds, the clock `time.perf_counter` reads in every process on
Linux) as each one comes, a batch at a time when several are due at once, and exits after
SECONDS. The benchmark reads them on its event loop, starts one request per due time and
measures each latency from the due time, so a request started late (the benchmark's loop
busy, or this process scheduled late) counts as slow.

A process rather than a thread in the benchmark: a thread keeping time competes for the
benchmark's GIL with the system under test (every wake-up waits up to a switch interval
for it) and adds its own Python work to the loop's, and neither is there when requests come
from clients over the network. Timer slack is set to 1 ns so a sleep ends when asked,
not up to 50 us later (Linux's default slack for normal threads).

A sleep still ends late by itself on a virtual machine (here p50 50 us, p99 0.27 ms,
p999 1.1 ms past the time asked): that lateness would count as the system's. When the
interval leaves room (1 ms or more), the clock sleeps until SPIN_S before a due time and
spins the rest, as the benchmark's paced fdatasync does, so requests are started when
they are due. At shorter intervals it cannot spin without taking a core from the system
under test: it sleeps, and sends every time that is due when it wakes.
"""
from __future__ import annotations

import ctypes
import os
import struct
import sys
import time

PR_SET_TIMERSLACK = 29
SPIN_S = 0.0005        # spun before each due time (at intervals of SPIN_MIN_INTERVAL_S+)
SPIN_MIN_INTERVAL_S = 0.001


def _tight_timers() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: sleeps just end a little later


def run(start: float, interval: float, seconds: float, out: int = 1) -> None:
    _tight_timers()
    total = int(seconds / interval)
    spin = SPIN_S if interval >= SPIN_MIN_INTERVAL_S else 0.0
    n = 0
    while n < total:
        next_due = start + n * interval
        wait = next_due - spin - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        while time.perf_counter() < next_due:
            pass
        now = time.perf_counter()
        due = []
        while n < total and start + n * interval <= now:
            due.append(start + n * interval)
            n += 1
        if due:
            buf = memoryview(struct.pack(f"={len(due)}d", *due))
            while buf:
                buf = buf[os.write(out, buf):]


if __name__ == "__main__":
    first = sys.stdin.readline() if sys.argv[1] == "-" else sys.argv[1]
    if first.strip():  # (nothing: the benchmark gave up on this clock)
        run(float(first), float(sys.argv[2]), float(sys.argv[3]))
