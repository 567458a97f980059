"""CPU priority of background threads (decision 0012).

Work nobody is waiting on right now runs in threads at the lowest CPU priority the OS
offers, so that on a machine with few cores it takes the cores the event loop and the WAL
sync helper leave idle instead of delaying their wake-ups. Today that is the SQLite
metadata store's thread for big batches (an offload's catalog rows and checkpoints). On
Linux "idle" is SCHED_IDLE (as RocksDB does for compactions), "low" is nice 19; elsewhere
both leave the thread as it is.

A thread cannot raise its priority back without privileges, so only threads that do
background work and nothing else are lowered, and none that takes a lock the loop waits
for (the WAL file preparer does: it stays as it is).
"""
from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

PRIORITIES = ("idle", "low", "normal")
_priority = "idle"


def set_priority(priority: str) -> None:
    """Choose the priority of background threads started from now on."""
    global _priority
    if priority not in PRIORITIES:
        raise ValueError(f"background CPU priority must be one of {PRIORITIES}")
    _priority = priority


def lower_this_thread() -> None:
    """Run the calling thread at the background priority (best effort)."""
    if _priority == "normal" or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        if _priority == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
    except (AttributeError, OSError) as e:  # (a container may forbid it)
        log.debug("could not lower the priority of thread %s: %s", tid, e)
