"""A chunk replica on a local disk as an append-only log file (the local-disk WAL tier).

One object per chunk file would cost a file create, a link and a directory fsync per chunk;
a log costs one write and one sync, which is what the disk can do. Every replica on one
block device (usually: the replica directories of one machine) shares one writer per event
loop, which takes every queued entry of every replica, writes each replica's entries at
the end of its current file (the page cache, on the loop), has a helper process make them
durable together (s2core/wal/syncer.py: the blocking sync calls run beside the loop, not
in a thread that shares its GIL) and only then answers the puts (group commit across
replicas: three replica directories on one disk cost about one sync, not three competing
ones).

Files are recycled. A file whose entries are all deleted becomes the next file to write
(renamed to a new number) or a spare, and a new replica prepares spare files of full size
in the background. Writing into a file whose blocks are already allocated and synced is a
pure overwrite: it changes no file-system metadata, so no journal commit is needed and,
on ext4 and XFS, all replicas' files become durable with one range write-back wait per
file and one device cache flush (see docs/decisions/0008-wal-on-one-disk.md). Anything
else (a file that grows, other file systems) gets an fdatasync per file.

File format: a sequence of entries

    magic u32 | key_len u16 | data_len u32 | header_crc u32 | key | data

`header_crc` is the CRC-32C of the file's number, key_len, data_len and key: a scan on open
trusts lengths and keys only from a header written into *this* life of the file, so the
stale entries of a recycled file (or zeros) end the scan like a torn tail does. File numbers
only grow, and a spare keeps its number in its name, so a number is never reused while any
file could hold bytes written under it. Data is covered by the chunk's own checksum, checked
by the chunk log, which repairs a bad copy by putting it again (a later entry for a key
wins). Deletes are in memory only: an entry deleted before a crash comes back on open as
garbage that the chunk log ignores and deletes again (it is below the floor or past an
epoch's end), and a file is recycled once all its entries are deleted.

Files written by the first format (magic "S2LG", header CRC without the file number, files
that only grew) are still read.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import crc32c

from s2core.diskio import (
    SFR_WRITE_AND_WAIT,
    SHORT_WRITE_BYTES,
    fs_type,
    pwrite_parts,
    pwrite_short,
    sync_file_range,
    sync_file_range_fn,
)
from s2core.errors import Closed, InvalidArgument, Unavailable
from s2core.objstore.base import ObjectExists, ObjectNotFound
from s2core.wal import syncer

log = logging.getLogger(__name__)

MAGIC = 0x53324C48     # "S2LH": header CRC includes the file number (recyclable files)
MAGIC_V1 = 0x53324C47  # "S2LG": the first format, read only
_HDR = struct.Struct(">IHII")
_NUM = struct.Struct(">Q")
FILE_BYTES = 16 * 1024 * 1024
# Recycled or prepared files kept per replica (16 MiB each by default). An offload frees
# several files at once; with 2 spares, 3 replicas at 200 MiB/s zero-filled 39 new files
# (624 MiB of zeros) in 5 s, with 8 only the 15 of the start (decision 0008).
SPARE_FILES = 8
_ZERO = bytes(256 * 1024)
_ZERO_PIECE = len(_ZERO)   # new files are zero-filled a piece at a time, in the background
_ZERO_PAUSE_S = 0.002

_ONE_FLUSH_FS = ("ext4", "xfs")  # overwrite + range write-back + one flush is durable
_SYNCER = os.path.abspath(syncer.__file__)


@dataclass(slots=True)
class _Put:
    replica: LocalLogReplica
    key: str
    raw_key: bytes
    parts: list
    nbytes: int
    if_absent: bool
    loop: asyncio.AbstractEventLoop
    done: Callable[[BaseException | None], None]  # runs on `loop` with the outcome
    lazy: bool = False  # not needed for a quorum: see _Device


def _settle(fut: asyncio.Future, err: BaseException | None) -> None:
    if not fut.done():
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)


def _deliver(outcomes: list) -> None:
    for done, outcome in outcomes:
        try:
            done(outcome)  # None: durable; else the error
        except Exception:  # a bug in one caller must not keep the others' answers
            log.exception("WAL completion callback failed")


class _Syncer:
    """The sync helper process of one _Device (s2core/wal/syncer.py) and its socket.
    Requests are answered in order; `on_answer(errnos)` gets each answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_answer, on_lost) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # the helper's doorbell (see syncer.py: a request on the socket alone would wake
        # the helper on the loop's CPU, ahead of the loop)
        self.bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) \
            if hasattr(os, "eventfd") else None
        argv = [sys.executable, "-I", "-S", _SYNCER, str(theirs.fileno())]
        pass_fds = [theirs.fileno()]
        if self.bell is not None:
            argv.append(str(self.bell))
            pass_fds.append(self.bell)
        try:
            self.proc = subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                         close_fds=True)
        except BaseException:
            ours.close()
            if self.bell is not None:
                os.close(self.bell)
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.loop = loop
        self._on_answer = on_answer
        self._on_lost = on_lost
        self._want: deque[int] = deque()  # sizes of the answers to come, in order
        self._buf = b""
        loop.add_reader(ours.fileno(), self._readable)

    def request(self, mode: int, kinds: list[int], fds: list[int]) -> None:
        # a few dozen bytes, at most `_Device.DEPTH` requests queued: never blocks
        socket.send_fds(self.sock, [syncer.encode_request(mode, kinds)], fds)
        self._want.append(4 * len(kinds))
        if self.bell is not None:
            os.eventfd_write(self.bell, 1)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            self._on_lost()
            return
        buf = self._buf + data
        while self._want and len(buf) >= self._want[0]:
            n = self._want.popleft()
            errs, buf = struct.unpack(f">{n // 4}i", buf[:n]), buf[n:]
            self._on_answer(errs)
        self._buf = buf

    def close(self) -> None:
        """Close the socket; the helper exits at end of file once its syncs are done."""
        if self.sock.fileno() < 0:
            return
        try:
            self.loop.remove_reader(self.sock.fileno())
        except RuntimeError:
            pass  # the loop is closed already
        self.sock.close()
        if self.bell is not None:
            os.close(self.bell)
            self.bell = None
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(slots=True)
class _Deferred:
    """Lazy puts written into one replica's file whose sync waits for a later request (the
    next one the device sends, or a request of their own once they waited LAZY_S)."""

    rep: LocalLogReplica
    fd: int                         # a duplicate: the replica may move to a new file
    puts: list[_Put]
    placed: list
    breaks: int                     # the replica's break count when they were written
    overwrite: bool
    at: float                       # loop time of the write


@dataclass(slots=True)
class _Batch:
    """Puts written together and made durable by one request to the sync helper."""

    puts: list[_Put]                # the puts this batch answers
    outcomes: list                  # (put, error) decided before the sync
    written: list                   # (replica, puts, placed, break count at write)
    synced: list                    # the replicas the request syncs, in its order
    settles: list = field(default_factory=list)  # _Deferred synced after them
    nfds: int = 0                   # descriptors in the request (the answer's length)
    errs: tuple | None = None       # the answer, once it came
    source: list | None = None      # the queue this batch was made from
    sent: bool = False              # its request is with the helper (an answer will come)
    failure: BaseException | None = None  # a writer bug after the request: fail it all


class _Device:
    """Group commit for the replicas on one block device, driven by one event loop.

    Puts are queued; a flush writes everything queued into each replica's file (the page
    cache: microseconds, on the loop) and one request to the sync helper process makes it
    durable, every replica's file together. Up to DEPTH requests are under way: the
    helper starts the next sync as soon as one ends, without waiting for the loop to hear
    about it, and puts queued meanwhile go into the next flush. Nothing here blocks the
    loop on the disk.

    Lazy puts (the copies a chunk log does not need for its write quorum) stay out of the
    sync that the others wait for when they share it: they are written into the page
    cache once that sync's request is sent (while the helper syncs, on another core) and
    the next request makes them durable, or a request of their own after LAZY_S. The
    acks then wait for W copies to be written and synced, not N. A lazy put with no
    urgent one beside it is written and synced as usual."""

    DEPTH = 2
    LAZY_S = 0.002
    _registry: ClassVar[dict[tuple[int, asyncio.AbstractEventLoop], _Device]] = {}

    def __init__(self, dev: int, one_flush: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.dev = dev
        self.one_flush = one_flush
        self.loop = loop
        self.users = 0
        self._queue: list[_Put] = []
        self._scheduled = False
        self._batches: deque[_Batch] = deque()  # under way, in request order
        self._deferred: list[_Deferred] = []    # written, for the next request to sync
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._syncer: _Syncer | None = None

    @classmethod
    def acquire(cls, root: str, loop: asyncio.AbstractEventLoop) -> _Device:
        dev = os.stat(root).st_dev
        one_flush = sync_file_range_fn is not None and fs_type(root) in _ONE_FLUSH_FS
        d = cls._registry.get((dev, loop))
        if d is None:
            d = cls._registry[(dev, loop)] = _Device(dev, one_flush, loop)
        d.one_flush = d.one_flush and one_flush
        d.users += 1
        return d

    def release(self) -> None:
        self.users -= 1
        if self.users:
            return
        if self._registry.get((self.dev, self.loop)) is self:
            del self._registry[(self.dev, self.loop)]
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if self._syncer is not None:
            self._syncer.close()
            self._syncer = None

    def start_syncer(self) -> None:
        """Start the helper ahead of the first sync (which would wait ~20-50 ms for it)."""
        if self._syncer is None:
            try:
                self._syncer = _Syncer(self.loop, self._answered, self._lost)
            except OSError as e:
                log.warning("the WAL sync helper did not start (the first sync retries): %s",
                            e)

    def submit(self, put: _Put) -> None:
        self._queue.append(put)
        if len(self._batches) >= self.DEPTH:
            return  # the first sync to end lets them go
        if len(self._queue) >= self.users:
            self._flush()  # every replica's copy of a chunk is here: no need to wait
        elif not self._scheduled:
            self._scheduled = True  # puts submitted in this loop turn go together
            self.loop.call_soon(self._flush)

    def _flush(self, settle: bool = False) -> None:
        """Write and sync what is queued; `settle`: lazy puts alone are reason enough."""
        self._scheduled = False
        if len(self._batches) >= self.DEPTH or not (self._queue or settle and self._deferred):
            return
        puts, self._queue = self._queue, []
        try:
            self._write(puts)
        except BaseException as e:  # a bug: fail the puts rather than hang their callers
            log.exception("WAL device writer failed")
            failing = puts
            for batch in self._batches:
                if batch.source is not puts:
                    continue
                if batch.sent and batch.errs is None:
                    # the helper answers its request: the batch keeps its place, so that
                    # the answer is not taken for the next one's, and fails once it comes
                    for rep, _, _, _ in batch.written:
                        rep._mark_broken()
                    batch.failure = e
                    return
                self._batches.remove(batch)  # (no answer to wait for)
                for d in batch.settles:
                    os.close(d.fd)
                    failing = failing + d.puts
                break
            self._batches.append(_Batch(failing, [(p, e) for p in failing], [], [], errs=()))
            self._complete()

    def _write(self, puts: list[_Put]) -> None:
        by_replica: dict[LocalLogReplica, list[_Put]] = {}
        for put in puts:
            by_replica.setdefault(put.replica, []).append(put)
        urgent = any(not p.lazy for p in puts)
        outcomes: list = []
        written = []
        later: list[tuple[LocalLogReplica, list[_Put]]] = []
        pure, fds, synced = True, [], []
        for rep, rputs in by_replica.items():
            if urgent and rep._fsync and all(p.lazy for p in rputs):
                later.append((rep, rputs))  # written once the others' sync is under way
                continue
            try:
                placed, overwrite = rep._write(rputs)
            except OSError as e:
                rep._mark_broken()
                outcomes.extend((p, e) for p in rputs)
                continue
            written.append((rep, rputs, placed, rep._breaks))
            if rep._fsync and any(x is not None for x in placed):
                synced.append(rep)
                fds.append(rep._fd)
                pure = pure and overwrite
        settles, self._deferred = self._deferred, []
        for d in settles:
            fds.append(d.fd)
            pure = pure and d.overwrite
        deferred = {rep for rep, _ in later}
        answers = [p for p in puts if p.replica not in deferred]
        answers += [p for d in settles for p in d.puts]
        batch = _Batch(answers, outcomes, written, synced, settles, len(fds), source=puts)
        self._batches.append(batch)
        if not fds:
            batch.errs = ()
            self._complete()
        else:
            mode = syncer.MODE_ONE_FLUSH if self.one_flush and pure and len(fds) > 1 \
                else syncer.MODE_EACH
            try:
                if self._syncer is None:
                    self._syncer = _Syncer(self.loop, self._answered, self._lost)
                self._syncer.request(mode, [syncer.KIND_DATA] * len(fds), fds)
                batch.sent = True
            except OSError as e:
                log.warning("the WAL sync helper is unavailable: %s", e)
                self._stop_syncer()  # fails the syncs under way, this one included
        if later:
            self._write_later(later)

    def _write_later(self, later: list) -> None:
        """Write lazy puts into the page cache (while the helper syncs the others) and
        leave them for the next request to make durable."""
        failed: list = []
        for rep, rputs in later:
            try:
                placed, overwrite = rep._write(rputs)
            except Exception as e:  # noqa: BLE001 (a bug too: the request went out already)
                rep._mark_broken()
                failed.append((rep, rputs, e))
                continue
            try:
                fd = os.dup(rep._fd)
            except OSError as e:  # (out of descriptors): written, but no way to sync it
                rep._uncount(placed)
                failed.append((rep, rputs, e))
                continue
            self._deferred.append(_Deferred(rep, fd, rputs, placed, rep._breaks, overwrite,
                                            self.loop.time()))
        self._arm_lazy_timer()
        for rep, rputs, e in failed:
            rep._done(len(rputs))
            _deliver([(p.done, e) for p in rputs])

    def _arm_lazy_timer(self) -> None:
        if self._lazy_timer is None and self._deferred:
            oldest = self._deferred[0]
            self._lazy_timer = self.loop.call_at(oldest.at + self.LAZY_S,
                                                 self._on_lazy_timer, oldest)

    def _on_lazy_timer(self, armed_for: _Deferred) -> None:
        """Lazy puts that no request took within LAZY_S get one of their own.

        Whether they waited is told by which puts are oldest, not by the clock: uvloop's
        timers have millisecond resolution and may fire a little before the time asked,
        and re-arming until `loop.time()` caught up spun the loop for up to 1 ms."""
        self._lazy_timer = None
        if not self._deferred:
            return
        if self._deferred[0] is not armed_for:
            self._arm_lazy_timer()  # (a request took the older ones)
        else:  # (if DEPTH requests are under way, the first to end rearms the timer)
            self._flush(settle=True)

    def _answered(self, errs) -> None:
        for batch in self._batches:
            if batch.errs is None and batch.nfds:
                batch.errs = errs
                break
        self._complete()

    def _lost(self) -> None:
        """The helper exited (killed?): the syncs under way failed; a new helper starts
        with the next one."""
        self._syncer = None
        if any(b.errs is None for b in self._batches):
            log.warning("the WAL sync helper exited during a sync")
        for batch in self._batches:
            if batch.errs is None:
                batch.errs = (errno.EIO,) * batch.nfds
        self._complete()

    def _stop_syncer(self) -> None:
        if self._syncer is not None:
            self._syncer.close()
            self._syncer = None
        self._lost()

    def _complete(self) -> None:
        """Answer the batches whose syncs ended, in order; then flush what waits."""
        while self._batches and self._batches[0].errs is not None:
            batch = self._batches.popleft()
            errs = batch.errs
            failed = {rep: OSError(err, os.strerror(err))
                      for rep, err in zip(batch.synced, errs) if err}
            for rep in failed:
                rep._mark_broken()
            outcomes = batch.outcomes
            for rep, puts, placed, breaks in batch.written:
                err = failed.get(rep) or batch.failure
                if err is None and rep._breaks != breaks:
                    # an earlier write or sync of this file failed after this one was
                    # written: its error may have been reported to that one only
                    err = OSError(errno.EIO, "an earlier write to this WAL file failed")
                if err is not None:
                    rep._uncount(placed)
                    outcomes.extend((p, err) for p in puts)
                else:
                    outcomes.extend(rep._commit(puts, placed))
            for i, d in enumerate(batch.settles):
                code = errs[len(batch.synced) + i]
                os.close(d.fd)
                err = OSError(code, os.strerror(code)) if code else batch.failure
                if err is not None:
                    d.rep._mark_broken()
                elif d.rep._breaks != d.breaks:
                    err = OSError(errno.EIO, "an earlier write to this WAL file failed")
                if err is not None:
                    d.rep._uncount(d.placed)
                    outcomes.extend((p, err) for p in d.puts)
                else:
                    outcomes.extend(d.rep._commit(d.puts, d.placed))
            counts: dict[LocalLogReplica, int] = {}
            for put in batch.puts:
                counts[put.replica] = counts.get(put.replica, 0) + 1
            for rep, n in counts.items():
                rep._done(n)
            _deliver([(put.done, outcome) for put, outcome in outcomes])
        if self._queue and not self._scheduled and len(self._batches) < self.DEPTH:
            self._scheduled = True
            self.loop.call_soon(self._flush)
        elif self._deferred and self._lazy_timer is None:
            self._arm_lazy_timer()


class LocalLogReplica:
    """An ObjectStore-shaped chunk replica backed by log files in `root`.

    `put` also takes a list of buffers (written back to back with pwritev, never joined).
    Everything queued while a sync runs goes into the next one (`groups_writes`)."""

    accepts_parts = True
    groups_writes = True

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True,
                 file_bytes: int = FILE_BYTES, spare_files: int = SPARE_FILES,
                 exclusive: bool = False) -> None:
        """`exclusive`: hold a lock on the directory (`lock`, flock) while open, so that
        no other process writes its files meanwhile (a broker that adopted another one's
        WAL, and that broker come back: broker/cluster.py); Unavailable if another
        process holds it."""
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)
        self.name = f"log://{self.root}"
        self._lockfd = lock_dir(self.root) if exclusive else None
        self._fsync = fsync
        self._file_bytes = file_bytes
        self._spare_files = spare_files
        self._index: dict[str, tuple[int, int, int]] = {}  # key -> (file no, offset, len)
        self._live: dict[int, int] = {}                    # file no -> live entries
        self._spares: list[int] = []                       # numbers of *.spare files
        self._unclean: set[int] = set()                    # files never to recycle
        self._reserved = 0                                 # number being prepared
        self._lock = threading.Lock()
        self._closed = False
        self._pending = 0
        self._gone: set[str] = set()  # keys deleted while puts were under way
        self._drained: asyncio.Future | None = None  # close() waits for the puts under way
        self._broken = False
        self._breaks = 0  # write or sync failures so far
        top = self._scan()
        self._fileno = top + 1
        self._fd, self._capacity = self._first_file()
        self._size = 0
        self._live[self._fileno] = 0
        self._next: tuple[int, int, int] | None = None  # (file no, fd, capacity)
        if fsync:
            _fsync_dir(self.root)
        self._device: _Device | None = None  # the writer of the loop that puts
        try:  # opened on a loop (the usual case): its helper starts now, not at a put
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._device = _Device.acquire(self.root, loop)
            if fsync:
                self._device.start_syncer()
        self._preparer: threading.Thread | None = None
        self._prep_wanted = False
        self._to_retire: list[int] = []  # files left by rotations, for the preparer
        self._prep_cond = threading.Condition(self._lock)
        self._prepare_soon()

    def _path(self, n: int) -> str:
        return os.path.join(self.root, f"{n:010d}.log")

    def _spare_path(self, n: int) -> str:
        return os.path.join(self.root, f"{n:010d}.spare")

    # -- open: rebuild the index -----------------------------------------------------

    def _scan(self) -> int:
        """Index every file; returns the highest file number seen (data or spare)."""
        data, top = [], 0
        for f in os.listdir(self.root):
            stem, _, ext = f.partition(".")
            if ext == "dead":
                _reaper.remove(os.path.join(self.root, f), FILE_BYTES)
            if not stem.isdigit() or ext not in ("log", "spare"):
                continue
            top = max(top, int(stem))
            (data if ext == "log" else self._spares).append(int(stem))
        self._spares.sort()
        for n in sorted(data):
            with open(self._path(n), "rb") as f:
                buf = f.read()
            pos = 0
            self._live[n] = 0
            gen = _NUM.pack(n)
            while pos + _HDR.size <= len(buf):
                magic, klen, dlen, hcrc = _HDR.unpack_from(buf, pos)
                key_end = pos + _HDR.size + klen
                if key_end > len(buf):
                    break
                covered = buf[pos + 4:pos + 10] + buf[pos + _HDR.size:key_end]
                if magic == MAGIC:
                    ok = crc32c.crc32c(gen + covered) == hcrc
                else:
                    ok = magic == MAGIC_V1 and crc32c.crc32c(covered) == hcrc
                if not ok or key_end + dlen > len(buf):
                    break  # a torn tail, zeros, or a former life's entries: never acked
                key = buf[pos + _HDR.size:key_end].decode()
                self._put_index(key, (n, key_end, dlen))
                pos = key_end + dlen
            if not self._live[n]:
                del self._live[n]
                self._retire(n, len(buf), reuse=False)
            else:
                self._unclean.add(n)
        return top

    def _put_index(self, key: str, loc: tuple[int, int, int], counted: bool = False) -> None:
        """Index `key` at `loc`; `counted`: its file's live count has it already (an entry
        written and waiting for its sync counts, so its file is not recycled meanwhile)."""
        old = self._index.get(key)
        if old is not None:
            self._live[old[0]] -= 1
        self._index[key] = loc
        if not counted:
            self._live[loc[0]] = self._live.get(loc[0], 0) + 1

    def _retire(self, n: int, size: int, reuse: bool = True) -> None:
        """A data file with no live entries: keep it as a spare or remove it. Only files
        this process wrote and synced are reused: a file found on open may end in blocks
        that a crash left unsynced, which a pure overwrite must not rely on."""
        try:
            if reuse and n not in self._unclean and len(self._spares) < self._spare_files \
                    and size >= self._file_bytes:
                os.rename(self._path(n), self._spare_path(n))
                self._spares.append(n)
                self._spares.sort()
            else:
                dead = os.path.join(self.root, f"{n:010d}.dead")
                os.rename(self._path(n), dead)
                _reaper.remove(dead, size)
        except FileNotFoundError:
            pass

    def _first_file(self) -> tuple[int, int]:
        if self._fsync and self._spares:
            spare = self._spares.pop(0)
            os.rename(self._spare_path(spare), self._path(self._fileno))
            fd = os.open(self._path(self._fileno), os.O_WRONLY | os.O_CLOEXEC)
            os.fdatasync(fd)
            return fd, os.fstat(fd).st_size
        return self._create(self._fileno), 0

    def _create(self, n: int) -> int:
        return os.open(self._path(n), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)

    # -- spare files: prepared off the write path -----------------------------------

    def _prepare_soon(self, retire: int | None = None) -> None:
        """Make sure a full-size file is ready for the next rotation (and retire file
        `retire`, which a rotation left with no live entry): wake this replica's preparer
        thread. The thread lives as long as the replica (started when it opens): starting
        one per rotation cost the loop 0.3-0.8 ms each time (`Thread.start` waits until
        the new thread runs), three times over with three replicas; the stat and rename
        of a retirement are not the loop's either."""
        if not self._fsync:
            if retire is not None:
                self._retire_now(retire)
            return
        start = False
        with self._lock:
            if retire is not None:
                self._to_retire.append(retire)
            elif self._closed or self._next is not None:
                return
            self._prep_wanted = True
            if self._preparer is None or not self._preparer.is_alive():
                self._preparer = threading.Thread(target=self._prepare_loop, daemon=True,
                                                  name=f"wal-prep-{self.root}")
                start = True
            else:
                self._prep_cond.notify()
        if start:
            self._preparer.start()

    def _prepare_loop(self) -> None:
        while True:
            with self._lock:
                while not self._prep_wanted and not self._closed:
                    self._prep_cond.wait()
                self._prep_wanted = False
                retire, self._to_retire = self._to_retire, []
                closed = self._closed
            for n in retire:
                self._retire_now(n)
            if closed:
                return
            self._prepare()

    def _prepare(self) -> None:
        try:
            with self._lock:
                if self._closed or self._next is not None:
                    return
                n = self._reserved = self._fileno + 1
                spare = self._spares.pop(0) if self._spares else None
            if spare is not None:
                os.rename(self._spare_path(spare), self._path(n))
                fd = os.open(self._path(n), os.O_WRONLY | os.O_CLOEXEC)
                capacity = os.fstat(fd).st_size
            else:
                fd = self._create(n)
                capacity = 0
                capacity = _zero_fill(fd, self._file_bytes, lambda: self._closed)
            os.fdatasync(fd)  # every block allocated and synced: later writes are overwrites
            _fsync_dir(self.root)
            with self._lock:
                if self._closed or n != self._fileno + 1:
                    os.close(fd)  # rotation went ahead without it: a spare for later
                    os.rename(self._path(n), self._spare_path(n))
                    self._spares.append(n)
                    self._spares.sort()
                    return
                self._next = (n, fd, capacity)
        except OSError as e:
            log.warning("preparing a WAL file in %s failed: %s", self.root, e)
        finally:
            self._reserved = 0

    # -- the ObjectStore interface ---------------------------------------------------

    async def put(self, key: str, data, *, if_absent: bool = False) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._queue_put(key, data, if_absent, partial(_settle, fut))
        await fut

    def put_then(self, key: str, data, on_done, *, lazy: bool = False) -> None:
        """put(key, data, if_absent=True) without a coroutine: `on_done(error)` runs on
        this loop once the entry is durable (error None) or failed (ObjectExists if the
        key was present). The chunk log counts quorum acks from these callbacks directly,
        without a task per replica and the loop turns each costs. `lazy`: the caller's
        quorum does not need this copy; it stays out of a sync that others wait for (see
        _Device)."""
        self._queue_put(key, data, True, on_done, lazy)

    def _queue_put(self, key: str, data, if_absent: bool, done,
                   lazy: bool = False) -> None:
        raw_key = key.encode()
        if not key or len(raw_key) > 0xFFFF:
            raise InvalidArgument(f"bad key {key!r}")
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise Closed(f"{self.name} is closed")
            if if_absent and key in self._index:
                raise ObjectExists(key)
            self._pending += 1
        # not copied: callers never mutate a chunk after handing it over
        parts = data if isinstance(data, list) else [data]
        dev = self._device
        if dev is None or dev.loop is not loop:
            if dev is not None:
                dev.release()
            dev = self._device = _Device.acquire(self.root, loop)
        dev.submit(_Put(self, key, raw_key, parts, sum(map(len, parts)),
                                 if_absent, loop, done, lazy))

    async def get(self, key: str) -> bytes:
        with self._lock:
            loc = self._index.get(key)
        if loc is None:
            raise ObjectNotFound(key)
        n, off, length = loc
        try:
            return await asyncio.to_thread(_pread, self._path(n), off, length)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return (await self.get(key))[start:end]

    async def list(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._index if k.startswith(prefix))

    async def delete(self, key: str) -> None:
        await self.delete_many([key])

    async def delete_many(self, keys) -> None:
        """Delete `keys` (the chunk log collects thousands of small chunks per offload:
        one call, not a coroutine per key)."""
        dead = self._forget(keys)
        if dead:  # renaming or unlinking a big file: not on the loop
            await asyncio.to_thread(self._recycle, dead)

    def _forget(self, keys) -> list[int]:
        """Drop `keys` from the index; the numbers of files that have no entry left."""
        dead = []
        unsynced = self._unsynced_keys() if self._pending else ()
        with self._lock:
            index, live = self._index, self._live
            for key in keys:
                loc = index.pop(key, None)
                if loc is not None:
                    n = loc[0]
                    live[n] -= 1
                    if not live[n] and n != self._fileno:
                        del live[n]
                        dead.append(n)
                elif key in unsynced:
                    # written (or queued) and waiting for its sync (a lazy copy waits up
                    # to _Device.LAZY_S): indexed then, it would keep its file forever
                    self._gone.add(key)
        return dead

    def _unsynced_keys(self) -> set[str]:
        """Keys of this replica's puts that the device holds: queued, or written and not
        answered yet (a handful: looked at by deletes only)."""
        dev = self._device
        if dev is None:
            return set()
        keys = {p.key for p in dev._queue if p.replica is self}
        deferred = list(dev._deferred)
        for batch in dev._batches:
            keys.update(p.key for rep, puts, _, _ in batch.written if rep is self
                        for p in puts)
            deferred += batch.settles
        keys.update(p.key for d in deferred if d.rep is self for p in d.puts)
        return keys

    def _recycle(self, numbers: list[int]) -> None:
        for n in numbers:
            self._retire_now(n)
        self._prepare_soon()

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            self._prep_cond.notify()
        while self._pending:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self._preparer is not None:
            await asyncio.to_thread(self._preparer.join)
        if self._device is not None:
            self._device.release()
            self._device = None
        os.close(self._fd)
        if self._next is not None:
            os.close(self._next[1])
        if self._lockfd is not None:
            os.close(self._lockfd)  # (releases the lock)
            self._lockfd = None

    # -- called by the device writer, on the loop -------------------------------------------------

    def _write(self, puts: list[_Put]) -> tuple[list, bool]:
        """Write `puts` at the end of the current file (not yet synced). Returns where
        each landed (None: refused by if_absent) and whether it was a pure overwrite."""
        with self._lock:
            present = {p.key for p in puts if p.if_absent and p.key in self._index}
        need = sum(_HDR.size + len(p.raw_key) + p.nbytes for p in puts)
        if self._broken or self._size >= self._file_bytes or \
                (self._capacity and self._size + need > self._capacity) or \
                (not self._capacity and self._next is not None):
            self._rotate()  # (a file that grows is left as soon as a sized one is ready)
        gen = _NUM.pack(self._fileno)
        parts, placed, seen = [], [], set()
        off = self._size
        for p in puts:
            if p.if_absent and (p.key in present or p.key in seen):
                placed.append(None)
                continue
            seen.add(p.key)
            dlen = p.nbytes
            lens = struct.pack(">HI", len(p.raw_key), dlen)
            hdr = _HDR.pack(MAGIC, len(p.raw_key), dlen, crc32c.crc32c(gen + lens + p.raw_key))
            parts += (hdr, p.raw_key, *p.parts)
            off += len(hdr) + len(p.raw_key)
            placed.append((self._fileno, off, dlen))
            off += dlen
        if parts:
            write = pwrite_short if off - self._size <= SHORT_WRITE_BYTES else pwrite_parts
            write(self._fd, parts, self._size)
            self._size = off
            with self._lock:  # live from now until its sync fails: see _put_index
                self._live[self._fileno] += sum(1 for x in placed if x is not None)
        return placed, off <= self._capacity

    def _commit(self, puts: list[_Put], placed: list) -> list:
        out = []
        gone = []
        with self._lock:
            for p, loc in zip(puts, placed):
                if loc is None:
                    out.append((p, ObjectExists(p.key)))
                    continue
                if p.key in self._gone:  # deleted while it was being synced: see _forget
                    self._gone.discard(p.key)
                    gone.append(loc)
                else:
                    self._put_index(p.key, loc, counted=True)
                out.append((p, None))
        if gone:
            self._uncount(gone)
        return out

    def _uncount(self, placed: list) -> None:
        """Entries whose sync failed: they no longer keep their file alive."""
        dead = []
        with self._lock:
            for loc in placed:
                if loc is not None:
                    n = loc[0]
                    self._live[n] -= 1
                    if not self._live[n] and n != self._fileno:
                        del self._live[n]
                        dead.append(n)
        for n in dead:
            self._retire_now(n)

    def _retire_now(self, n: int) -> None:
        try:
            size = os.stat(self._path(n)).st_size
        except FileNotFoundError:
            return
        with self._lock:
            self._retire(n, size)

    def _mark_broken(self) -> None:
        """A write or sync failed: its bytes are in an unknown state. Move to a new file
        at the next write, and never recycle this one."""
        self._broken = True
        self._breaks += 1
        self._unclean.add(self._fileno)

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n
            idle = not self._pending
            if idle:
                self._gone.clear()
        if idle and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _rotate(self) -> None:
        os.close(self._fd)
        with self._lock:
            old = self._fileno
            self._fileno += 1
            if self._fileno == self._reserved:
                self._fileno += 1  # being prepared: it becomes a spare when ready
            nxt, self._next = self._next, None
            self._live.setdefault(self._fileno, 0)
            dead = not self._live.get(old)
            if dead:
                self._live.pop(old, None)
        if nxt is not None and nxt[0] == self._fileno:
            self._fd, self._capacity = nxt[1], nxt[2]
        else:
            if nxt is not None:
                os.close(nxt[1])
            self._fd, self._capacity = self._create(self._fileno), 0
            if self._fsync:  # the new file's name must survive too
                _fsync_dir(self.root)
        self._size = 0
        self._broken = False
        self._prepare_soon(retire=old if dead else None)


class _Reaper:
    """Removes retired files one at a time, spaced out: unlinking a big file frees (and on
    a `discard` mount, trims) all its blocks, which stalls the WAL's syncs when many files
    die at once (after a burst is offloaded)."""

    PAUSE_S = 0.05

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paths: deque[tuple[str, float]] = deque()  # (path, pause after it)
        self._thread: threading.Thread | None = None

    def remove(self, path: str, size: int) -> None:
        """Remove `path` (`size` bytes) soon; the pause after it scales with its size (a
        small file frees next to nothing)."""
        with self._cond:
            self._paths.append((path, self.PAUSE_S * min(1.0, size / FILE_BYTES)))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="wal-reaper",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._paths:
                    self._cond.wait(5)
                    if not self._paths:
                        self._thread = None
                        return
                path, pause = self._paths.popleft()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("removing %s failed: %s", path, e)
            time.sleep(pause)


_reaper = _Reaper()


def _zero_fill(fd: int, size: int, stop) -> int:
    """Write `size` zero bytes into `fd` in small synced pieces with pauses between them,
    so the device queue never holds more than a piece when a WAL sync arrives."""
    zero, done = memoryview(_ZERO), 0
    while done < size and not stop():
        n = os.pwrite(fd, zero[:min(_ZERO_PIECE, size - done)], done)
        if sync_file_range_fn is not None:
            sync_file_range(fd, done, n, SFR_WRITE_AND_WAIT)
        done += n
        time.sleep(_ZERO_PAUSE_S)
    return done


def lock_dir(root: str) -> int:
    """An exclusive lock on `root`'s lock file, held by the returned descriptor."""
    fd = os.open(os.path.join(root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Unavailable(f"the WAL directory {root} is in use by another process") from None
    return fd


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pread(path: str, off: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, length, off)
    finally:
        os.close(fd)
