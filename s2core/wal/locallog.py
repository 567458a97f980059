"""A chunk replica on a local disk as an append-only log file (the local-disk WAL tier).

One object per chunk file would cost a file create, a link and a directory fsync per chunk;
a log costs one append and one fdatasync, which is what the disk can do. Puts queue to one
writer thread per replica, which appends every queued entry and fdatasyncs once (group
commit at the replica), so a put returns only once its bytes are on stable storage.

File format: a sequence of entries

    magic u32 | key_len u16 | data_len u32 | header_crc u32 | key | data

`header_crc` (CRC-32C of key_len, data_len and key) lets the scan on open trust lengths and
keys; data is covered by the chunk's own checksum, checked by the chunk log, which repairs a
bad copy by putting it again (a later entry for a key wins). A torn entry at the end of the
newest file is cut off. Deletes are in memory only: an entry deleted before a crash comes
back on open as garbage that the chunk log ignores and deletes again (it is below the floor
or past an epoch's end), and a file is removed once all its entries are deleted.
"""
from __future__ import annotations

import asyncio
import os
import struct
import threading
from collections import deque
from concurrent.futures import Future

import crc32c

from s2core.errors import Closed, InvalidArgument
from s2core.objstore.base import ObjectExists, ObjectNotFound
from s2core.objstore.localdir import write_parts

MAGIC = 0x53324C47  # "S2LG"
_HDR = struct.Struct(">IHII")
FILE_BYTES = 64 * 1024 * 1024


class LocalLogReplica:
    """An ObjectStore-shaped chunk replica backed by append-only files in `root`.

    `put` also takes a list of buffers (written back to back with writev, never joined)."""

    accepts_parts = True

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True,
                 file_bytes: int = FILE_BYTES) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)
        self.name = f"log://{self.root}"
        self._fsync = fsync
        self._file_bytes = file_bytes
        self._index: dict[str, tuple[int, int, int]] = {}  # key -> (file no, offset, len)
        self._live: dict[int, int] = {}                    # file no -> live entries
        self._lock = threading.Lock()
        self._queue: deque = deque()
        self._wakeup = threading.Condition(self._lock)
        self._closed = False
        self._scan()
        self._fileno = max(self._live, default=0) + 1
        self._fd = os.open(self._path(self._fileno),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._size = 0
        self._live.setdefault(self._fileno, 0)
        if fsync:
            _fsync_dir(self.root)
        self._thread = threading.Thread(target=self._writer, name=f"wal-{self.root}",
                                        daemon=True)
        self._thread.start()

    def _path(self, n: int) -> str:
        return os.path.join(self.root, f"{n:010d}.log")

    # -- open: rebuild the index -----------------------------------------------------

    def _scan(self) -> None:
        files = sorted(int(f[:-4]) for f in os.listdir(self.root)
                       if f.endswith(".log") and f[:-4].isdigit())
        for n in files:
            with open(self._path(n), "rb") as f:
                data = f.read()
            pos = 0
            self._live[n] = 0
            while pos + _HDR.size <= len(data):
                magic, klen, dlen, hcrc = _HDR.unpack_from(data, pos)
                key_end = pos + _HDR.size + klen
                if magic != MAGIC or key_end > len(data) or \
                        crc32c.crc32c(data[pos + 4:pos + 10] + data[pos + _HDR.size:key_end]) != hcrc:
                    break
                if key_end + dlen > len(data):
                    break  # torn tail
                key = data[pos + _HDR.size:key_end].decode()
                self._put_index(key, (n, key_end, dlen))
                pos = key_end + dlen
            if pos < len(data):
                os.truncate(self._path(n), pos)  # a torn or garbled tail: never acknowledged
            if not self._live[n]:
                os.unlink(self._path(n))
                del self._live[n]

    def _put_index(self, key: str, loc: tuple[int, int, int]) -> None:
        old = self._index.get(key)
        if old is not None:
            self._live[old[0]] -= 1
        self._index[key] = loc
        self._live[loc[0]] = self._live.get(loc[0], 0) + 1

    # -- the ObjectStore interface ---------------------------------------------------

    async def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        raw_key = key.encode()
        if not key or len(raw_key) > 0xFFFF:
            raise InvalidArgument(f"bad key {key!r}")
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise Closed(f"{self.name} is closed")
            if if_absent and key in self._index:
                raise ObjectExists(key)
            # not copied: callers never mutate a chunk after handing it over
            parts = data if isinstance(data, list) else [data]
            self._queue.append((key, raw_key, parts, if_absent, fut))
            self._wakeup.notify()
        await asyncio.wrap_future(fut)

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
        drop = None
        with self._lock:
            loc = self._index.pop(key, None)
            if loc is not None:
                self._live[loc[0]] -= 1
                if not self._live[loc[0]] and loc[0] != self._fileno:
                    del self._live[loc[0]]
                    drop = loc[0]
        if drop is not None:  # unlinking a big file takes milliseconds: not on the loop
            await asyncio.to_thread(_unlink, self._path(drop))

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wakeup.notify()
        await asyncio.to_thread(self._thread.join)
        os.close(self._fd)

    # -- the writer thread -----------------------------------------------------------

    def _writer(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wakeup.wait()
                if not self._queue and self._closed:
                    return
                batch = list(self._queue)
                self._queue.clear()
            try:
                placed = self._append(batch)
            except OSError as e:
                for *_, fut in batch:
                    fut.set_exception(e)
                continue
            with self._lock:
                for (key, _, _, if_absent, fut), loc in zip(batch, placed):
                    if loc is None:
                        fut.set_exception(ObjectExists(key))
                    else:
                        self._put_index(key, loc)
                        fut.set_result(None)

    def _append(self, batch: list) -> list:
        if self._size >= self._file_bytes:
            self._rotate()
        parts, placed = [], []
        off = self._size
        seen = set()
        with self._lock:
            present = {key for key, _, _, if_absent, _ in batch
                       if if_absent and key in self._index}
        for key, raw_key, data_parts, if_absent, _ in batch:
            if if_absent and (key in present or key in seen):
                placed.append(None)
                continue
            seen.add(key)
            dlen = sum(len(p) for p in data_parts)
            lens = struct.pack(">HI", len(raw_key), dlen)
            hdr = _HDR.pack(MAGIC, len(raw_key), dlen, crc32c.crc32c(lens + raw_key))
            parts += (hdr, raw_key, *data_parts)
            off += len(hdr) + len(raw_key)
            placed.append((self._fileno, off, dlen))
            off += dlen
        write_parts(self._fd, parts)
        if parts:
            if self._fsync:
                os.fdatasync(self._fd)
            self._size = off
        return placed

    def _rotate(self) -> None:
        os.close(self._fd)
        with self._lock:
            if not self._live.get(self._fileno):
                self._live.pop(self._fileno, None)
                try:
                    os.unlink(self._path(self._fileno))
                except FileNotFoundError:
                    pass
            self._fileno += 1
            self._live.setdefault(self._fileno, 0)
        self._fd = os.open(self._path(self._fileno),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._size = 0
        if self._fsync:  # the new file's name must survive too
            _fsync_dir(self.root)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
