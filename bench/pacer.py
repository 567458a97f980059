"""Open-loop load generator clock, run as its own process.

    python bench/pacer.py START INTERVAL SECONDS

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
"""
from __future__ import annotations

import ctypes
import os
import struct
import sys
import time

PR_SET_TIMERSLACK = 29


def _tight_timers() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: sleeps just end a little later


def run(start: float, interval: float, seconds: float, out: int = 1) -> None:
    _tight_timers()
    total = int(seconds / interval)
    n = 0
    while n < total:
        wait = start + n * interval - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
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
    run(float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))
