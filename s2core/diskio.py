"""Small disk helpers shared by the local WAL and the local object store (Linux first).

`sync_file_range(2)` is not in Python's os module; it is reached through libc when there is
one, and every caller has a portable fallback when it is not (None here).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SFR_WAIT_BEFORE, SFR_WRITE, SFR_WAIT_AFTER = 1, 2, 4
SFR_WRITE_AND_WAIT = SFR_WAIT_BEFORE | SFR_WRITE | SFR_WAIT_AFTER
IOV_MAX = 1024  # buffers per pwritev (Linux's limit)


def _libc(kind):
    try:
        return kind(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _load(lib, name: str, argtypes: list, restype):
    fn = getattr(lib, name, None) if lib is not None else None
    if fn is not None:
        fn.argtypes, fn.restype = argtypes, restype
    return fn


# CDLL calls hand the GIL back while they run, PyDLL calls keep it (see `pwrite_short`)
sync_file_range_fn = _load(_libc(ctypes.CDLL), "sync_file_range",
                           [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint],
                           ctypes.c_int)
_pwrite_keep_gil = _load(_libc(ctypes.PyDLL), "pwrite",
                         [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_longlong],
                         ctypes.c_ssize_t)

# Writes up to this size go to the page cache in microseconds: `pwrite_short` keeps the
# GIL for them.
SHORT_WRITE_BYTES = 256 * 1024


def _raise_errno() -> None:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err))


def sync_file_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
    """Start (SFR_WRITE) and/or wait for (SFR_WRITE_AND_WAIT) write-back of a file range;
    offset 0, nbytes 0 is the whole file. Raises OSError; only call when available."""
    if sync_file_range_fn(fd, offset, nbytes, flags) != 0:
        _raise_errno()


def pwrite_short(fd: int, parts: list, off: int) -> int:
    """pwrite_parts for a few buffers (SHORT_WRITE_BYTES at most) into the page cache,
    keeping the GIL: a thread that gives the GIL up around a 10 us call waits up to a
    switch interval to get it back whenever the event loop is busy. They are joined and
    written by one call."""
    if _pwrite_keep_gil is None or not _keeping_gil():
        return pwrite_parts(fd, parts, off)
    buf = b"".join(parts)
    t0 = time.monotonic()
    done = _pwrite_keep_gil(fd, buf, len(buf), off)
    _check_quick(t0, "a page-cache write")
    if done < 0:
        _raise_errno()
    if done < len(buf):  # short write (rare, but legal): finish it the portable way
        done += pwrite_parts(fd, [memoryview(buf)[done:]], off + done)
    return done


# A page-cache write can still block (the kernel throttles writers when too much of
# memory is dirty), and while it keeps the GIL the whole process waits. A call that took
# longer than QUICK_S (a short stall of the VM is not one) turns the GIL-keeping calls
# off for BACKOFF_S.
QUICK_S = 0.005
BACKOFF_S = 10.0
_gil_kept_again_at = 0.0


def _keeping_gil() -> bool:
    return time.monotonic() >= _gil_kept_again_at


def _check_quick(t0: float, what: str) -> None:
    global _gil_kept_again_at
    took = time.monotonic() - t0
    if took > QUICK_S:
        _gil_kept_again_at = time.monotonic() + BACKOFF_S
        log.warning("%s took %.1f ms; disk calls give the GIL up for the next %.0f s",
                    what, took * 1e3, BACKOFF_S)


def fs_type(path: str) -> str:
    """The file-system type of the mount holding `path` ('' if unknown)."""
    best, kind = "", ""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount = left.split()[4].replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and \
                        len(mount) >= len(best):
                    best, kind = mount, right.split()[0]
    except (OSError, IndexError):
        return ""
    return kind


def pwrite_all(fd: int, parts: list, off: int) -> int:
    """Write every byte of `parts` (at most IOV_MAX of them) at `off`; returns the bytes
    written. A short pwritev (rare, but legal) is finished with plain pwrites."""
    total = sum(len(p) for p in parts)
    done = os.pwritev(fd, parts, off)
    if done < total:
        rest = memoryview(b"".join(parts))[done:]
        pos = off + done
        while rest:
            n = os.pwrite(fd, rest, pos)
            rest, pos = rest[n:], pos + n
    return total


def pwrite_parts(fd: int, parts: list, off: int) -> int:
    """Write every byte of any number of `parts` at `off`; returns the bytes written."""
    done = 0
    for i in range(0, len(parts), IOV_MAX):
        done += pwrite_all(fd, parts[i:i + IOV_MAX], off + done)
    return done


class WritePacer:
    """Spreads background writes out in time: `wait(nbytes, rate)`, called by a writer
    thread before it writes `nbytes`, sleeps until they fit `rate` bytes/s, counted over
    every writer that shares this pacer (no burst credit is saved up while idle)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0  # monotonic time at which the next byte may be written

    def wait(self, nbytes: int, rate: float) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / rate
        if start > now:
            time.sleep(start - now)


def write_parts_in_pieces(fd: int, parts: list, piece: int,
                          pace: Callable[[int], None] | None = None) -> int:
    """Write `parts` from offset 0, waiting for each ~`piece` bytes to reach the device
    before writing more (when sync_file_range is available): a big file then never has
    more than a piece queued ahead of a small latency-critical sync on the same disk, and
    its final fdatasync has little left to do. `pace(nbytes)`, if given, is called before
    each piece is written (and may sleep: see WritePacer). Returns the bytes written."""
    off = 0
    group: list = []
    gbytes = 0

    def flush() -> None:
        nonlocal off, group, gbytes
        start = off
        if pace is not None:
            pace(gbytes)
        total = pwrite_all(fd, group, off)
        off += total
        group, gbytes = [], 0
        if sync_file_range_fn is not None:
            sync_file_range(fd, start, total, SFR_WRITE_AND_WAIT)

    for p in parts:
        if len(group) >= IOV_MAX:
            flush()
        group.append(p)
        gbytes += len(p)
        if gbytes >= piece:
            flush()
    if group:
        flush()
    return off
