"""A chunk replica on a local disk as an append-only log file (the local-disk WAL tier).

One object per chunk file would cost a file create, a link and a directory fsync per chunk;
a log costs one write and one sync, which is what the disk can do. Every replica on one
block device (usually: the replica directories of one machine) shares one writer thread,
which takes every queued entry of every replica, writes each replica's entries at the end
of its current file, makes them durable together and only then answers the puts (group
commit across replicas: three replica directories on one disk cost about one sync, not
three competing ones).

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
import logging
import os
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import crc32c

from s2core.diskio import (
    SFR_WRITE, SFR_WRITE_AND_WAIT, SHORT_WRITE_BYTES, fs_type, pwrite_parts, pwrite_short,
    sync_file_range, sync_file_range_fn,
)
from s2core.errors import Closed, InvalidArgument
from s2core.objstore.base import ObjectExists, ObjectNotFound

log = logging.getLogger(__name__)

MAGIC = 0x53324C48     # "S2LH": header CRC includes the file number (recyclable files)
MAGIC_V1 = 0x53324C47  # "S2LG": the first format, read only
_HDR = struct.Struct(">IHII")
_NUM = struct.Struct(">Q")
FILE_BYTES = 16 * 1024 * 1024
SPARE_FILES = 2        # recycled or prepared files kept per replica
_ZERO = bytes(256 * 1024)
_ZERO_PIECE = len(_ZERO)   # new files are zero-filled a piece at a time, in the background
_ZERO_PAUSE_S = 0.002

_ONE_FLUSH_FS = ("ext4", "xfs")  # overwrite + range write-back + one flush is durable


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


class _Device:
    """The writer thread shared by the replicas on one block device."""

    _registry: dict[int, _Device] = {}
    _registry_lock = threading.Lock()

    def __init__(self, dev: int, one_flush: bool) -> None:
        self.dev = dev
        self.one_flush = one_flush
        self.users = 0
        # A C-level queue: handing a put over takes no Python-level lock or condition on
        # the loop thread, and the writer blocks in it without the GIL.
        self._queue: queue.SimpleQueue[_Put | None] = queue.SimpleQueue()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"wal-dev-{dev}", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, root: str) -> _Device:
        dev = os.stat(root).st_dev
        one_flush = sync_file_range_fn is not None and fs_type(root) in _ONE_FLUSH_FS
        with cls._registry_lock:
            d = cls._registry.get(dev)
            if d is None or d._stop:
                d = cls._registry[dev] = _Device(dev, one_flush)
            d.one_flush = d.one_flush and one_flush
            d.users += 1
            return d

    def release(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users:
                return
            if self._registry.get(self.dev) is self:
                del self._registry[self.dev]
            self._stop = True
        self._queue.put(None)  # the writer finishes what is queued, then exits
        self._thread.join()

    def submit(self, put: _Put) -> None:
        self._queue.put(put)

    def _run(self) -> None:
        q = self._queue
        while True:
            batch = [q.get()]
            while True:  # everything queued meanwhile goes into this sync
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            stopping = batch[-1] is None  # release's marker: nothing is submitted after it
            if stopping:
                batch.pop()
            if not batch:
                return
            try:
                outcomes = self._write_batch(batch)
            except BaseException as e:  # a bug: fail the batch rather than hang its callers
                log.exception("WAL device writer failed")
                outcomes = [(p, e) for p in batch]
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            for put, outcome in outcomes:
                by_loop.setdefault(put.loop, []).append((put.done, outcome))
            for loop, outs in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_deliver, outs)
                except RuntimeError:
                    pass  # the loop is closed: nobody waits for these answers
            if stopping:
                return

    def _write_batch(self, batch: list[_Put]) -> list:
        by_replica: dict[LocalLogReplica, list[_Put]] = {}
        for put in batch:
            by_replica.setdefault(put.replica, []).append(put)
        outcomes: list = []
        written = []  # (replica, puts, placements, pure overwrite)
        for rep, puts in by_replica.items():
            try:
                placed, pure = rep._write(puts)
                written.append((rep, puts, placed, pure))
            except OSError as e:
                rep._mark_broken()
                outcomes.extend((p, e) for p in puts)
        failed = self._sync(written)
        for rep, puts, placed, _ in written:
            err = failed.get(rep)
            if err is not None:
                rep._mark_broken()
                outcomes.extend((p, err) for p in puts)
            else:
                outcomes.extend(rep._commit(puts, placed))
        for rep, puts in by_replica.items():
            rep._done(len(puts))
        return outcomes

    def _sync(self, written: list) -> dict:
        """Make every written range durable; the replicas that failed, with their error."""
        failed: dict = {}
        reps = [w[0] for w in written
                if w[0]._fsync and any(x is not None for x in w[2])]
        if not reps:
            return failed
        if self.one_flush and len(reps) > 1 and all(w[3] for w in written if w[0] in reps):
            # pure overwrites on ext4/XFS: write back every file's range and wait for it,
            # then one cache flush of the device (an fdatasync of a clean file issues it).
            # (Each call hands the GIL back and forth; fewer calls, fewer waits for it.)
            for r in reps:  # start every file's write-back, so the device sees them together
                try:
                    sync_file_range(r._fd, 0, 0, SFR_WRITE)
                except OSError as e:
                    failed[r] = e
            for r in reps:
                if r not in failed:
                    try:
                        sync_file_range(r._fd, 0, 0, SFR_WRITE_AND_WAIT)
                    except OSError as e:
                        failed[r] = e
            ok = [r for r in reps if r not in failed]
            if ok:
                try:
                    os.fdatasync(ok[0]._fd)
                except OSError as e:
                    failed.update((r, e) for r in ok)
            return failed
        if sync_file_range_fn is not None and len(reps) > 1:
            for r in reps:  # start every file's write-back before waiting for the first
                try:
                    sync_file_range(r._fd, 0, 0, SFR_WRITE)
                except OSError:
                    pass  # the fdatasync below reports it
        for r in reps:
            try:
                os.fdatasync(r._fd)
            except OSError as e:
                failed[r] = e
        return failed


class LocalLogReplica:
    """An ObjectStore-shaped chunk replica backed by log files in `root`.

    `put` also takes a list of buffers (written back to back with pwritev, never joined).
    Everything queued while a sync runs goes into the next one (`groups_writes`)."""

    accepts_parts = True
    groups_writes = True

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True,
                 file_bytes: int = FILE_BYTES, spare_files: int = SPARE_FILES) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)
        self.name = f"log://{self.root}"
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
        self._idle = threading.Condition(self._lock)
        self._broken = False
        top = self._scan()
        self._fileno = top + 1
        self._fd, self._capacity = self._first_file()
        self._size = 0
        self._live[self._fileno] = 0
        self._next: tuple[int, int, int] | None = None  # (file no, fd, capacity)
        if fsync:
            _fsync_dir(self.root)
        self._device = _Device.acquire(self.root)
        self._preparer: threading.Thread | None = None
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
                _reaper.remove(os.path.join(self.root, f))
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

    def _put_index(self, key: str, loc: tuple[int, int, int]) -> None:
        old = self._index.get(key)
        if old is not None:
            self._live[old[0]] -= 1
        self._index[key] = loc
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
                _reaper.remove(dead)
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

    def _prepare_soon(self) -> None:
        """Make sure a full-size file is ready for the next rotation (background)."""
        if not self._fsync or self._closed:
            return
        with self._lock:
            if self._next is not None or (self._preparer and self._preparer.is_alive()):
                return
            self._preparer = threading.Thread(target=self._prepare, daemon=True,
                                              name=f"wal-prep-{self.root}")
            self._preparer.start()

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

    def put_then(self, key: str, data, on_done) -> None:
        """put(key, data, if_absent=True) without a coroutine: `on_done(error)` runs on
        this loop once the entry is durable (error None) or failed (ObjectExists if the
        key was present). The chunk log counts quorum acks from these callbacks directly,
        without a task per replica and the loop turns each costs."""
        self._queue_put(key, data, True, on_done)

    def _queue_put(self, key: str, data, if_absent: bool, done) -> None:
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
        self._device.submit(_Put(self, key, raw_key, parts, sum(len(x) for x in parts),
                                 if_absent, loop, done))

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
        return dead

    def _recycle(self, numbers: list[int]) -> None:
        for n in numbers:
            try:
                size = os.stat(self._path(n)).st_size
            except FileNotFoundError:
                continue
            with self._lock:
                self._retire(n, size)
        self._prepare_soon()

    async def close(self) -> None:
        with self._lock:
            self._closed = True
        await asyncio.to_thread(self._drain_and_release)
        os.close(self._fd)
        if self._next is not None:
            os.close(self._next[1])

    def _drain_and_release(self) -> None:
        with self._lock:
            while self._pending:
                self._idle.wait()
        if self._preparer is not None:
            self._preparer.join()
        self._device.release()

    # -- called by the device thread -------------------------------------------------

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
        return placed, off <= self._capacity

    def _commit(self, puts: list[_Put], placed: list) -> list:
        out = []
        with self._lock:
            for p, loc in zip(puts, placed):
                if loc is None:
                    out.append((p, ObjectExists(p.key)))
                else:
                    self._put_index(p.key, loc)
                    out.append((p, None))
        return out

    def _mark_broken(self) -> None:
        """A write or sync failed: its bytes are in an unknown state. Move to a new file
        at the next write, and never recycle this one."""
        self._broken = True
        self._unclean.add(self._fileno)

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n
            if not self._pending:
                self._idle.notify_all()

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
        if dead:
            try:
                size = os.stat(self._path(old)).st_size
                with self._lock:
                    self._retire(old, size)
            except FileNotFoundError:
                pass
        self._prepare_soon()


class _Reaper:
    """Removes retired files one at a time, spaced out: unlinking a big file frees (and on
    a `discard` mount, trims) all its blocks, which stalls the WAL's syncs when many files
    die at once (after a burst is offloaded)."""

    PAUSE_S = 0.05

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paths: deque[str] = deque()
        self._thread: threading.Thread | None = None

    def remove(self, path: str) -> None:
        with self._cond:
            self._paths.append(path)
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
                path = self._paths.popleft()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("removing %s failed: %s", path, e)
            time.sleep(self.PAUSE_S)


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
