"""An object store in a local directory: one file per object, durable before `put` returns.

A put writes a temp file in the object's directory, fdatasyncs it, then publishes it under
its final name (`os.link` for create-if-absent, which fails atomically if the name exists;
`os.replace` otherwise) and fsyncs the directory so the name itself survives a power loss.
Readers therefore see either no object or the whole object, never a partial one.

Keys map to paths below the root ('/' separates directories). A key cannot be both an
object and a directory prefix of another key ('a' and 'a/b'): such a put raises
InvalidArgument. Temp files start with TMP_PREFIX; keys with a segment starting with it are
rejected, and listings skip them. A temp file left by a crash mid-put is garbage that no
listing shows.

Blocking file I/O runs on a small thread pool owned by the store (shut down by `close`).
"""
from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from s2core.diskio import WritePacer, pwrite_parts, write_parts_in_pieces
from s2core.errors import Closed, Indeterminate, InvalidArgument, Unavailable
from s2core.objstore.base import ObjectExists, ObjectNotFound
from s2core.objstore.keys import check_key, check_range

TMP_PREFIX = ".s2tmp-"

# Errors that mean "there is no object at this path" (the path, or a parent, is missing,
# or names a directory).
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)

_NAME_MAX = 255  # bytes in one file name on Linux filesystems

_T = TypeVar("_T")

_PIECE_BYTES = 131072


class LocalDirObjectStore:
    """Objects as files under `root`; `put` returns once data and name are on stable storage.

    With `fsync=False` nothing is synced: only for tests and throwaway data. `put` also
    takes a list of buffers, written one after the other (never joined).
    """

    accepts_parts = True
    paces_writes = True  # put(..., pace=bytes per second)

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True,
                 max_workers: int = 8) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)
        self.name = f"file://{self.root}"
        self._fsync = fsync
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="objstore-localdir")
        self._pacer = WritePacer()
        self._closed = False

    # -- interface ----------------------------------------------------------------------

    async def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False,
                  pace: float | Callable[[], float | None] | None = None) -> None:
        """Write `data` durably under `key`; with `if_absent`, ObjectExists if present.

        `pace`: write an object of several pieces at no more than this many bytes per
        second, counted over all the paced puts under way (background writes that should
        leave the disk to latency-critical syncs: see Offloader._segment_pace). A callable
        is asked before each piece, from the put's thread (None: that piece at full
        speed). A put under way when the store closes finishes at full speed."""
        if pace is not None and not callable(pace):
            _check_pace(pace)
        await self._run(self._put_sync, key, self._path(key), data, if_absent, pace)

    async def get(self, key: str) -> bytes:
        """The object's bytes, or ObjectNotFound."""
        return await self._run(self._read_sync, key, self._path(key), 0, None)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, clamped to its size."""
        check_range(start, end)
        return await self._run(self._read_sync, key, self._path(key), start, end)

    async def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, sorted; temp files are never listed."""
        return await self._run(self._list_sync, prefix)

    async def delete(self, key: str) -> None:
        """Remove `key` if present, and any directories that became empty.

        Deletes are not fsynced: an object that reappears after a power loss is garbage
        that the next collection deletes again, which costs less than a sync per delete.
        """
        await self._run(self._delete_sync, key, self._path(key))

    async def close(self) -> None:
        """Wait for in-flight operations, then stop the thread pool."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)

    # -- helpers ------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        segments = check_key(key).split("/")
        if any(s.startswith(TMP_PREFIX) for s in segments):
            raise InvalidArgument(f"object key segments may not start with {TMP_PREFIX!r}")
        if any(len(os.fsencode(s)) > _NAME_MAX for s in segments):
            raise InvalidArgument(f"a segment of {key!r} is longer than {_NAME_MAX} bytes")
        path = os.path.join(self.root, *segments)
        assert path.startswith(self.root + os.sep), (key, path)
        return path

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._closed:
            raise Closed(f"object store {self.name} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _makedirs(self, key: str, dirpath: str) -> None:
        """Create `dirpath` and missing parents, fsyncing each parent whose entries changed.

        (If another put created a directory and has not yet fsynced its parent, this put
        may return before that entry is durable; the window is one fsync long.)
        """
        if dirpath == self.root or os.path.isdir(dirpath):
            return
        self._makedirs(key, os.path.dirname(dirpath))
        try:
            os.mkdir(dirpath)
        except FileExistsError:
            if os.path.isdir(dirpath):
                return
            if os.path.lexists(dirpath):
                raise InvalidArgument(f"{key!r}: a prefix of it is an object") from None
            # created and removed again by a concurrent put and delete: the caller retries
            raise FileNotFoundError(dirpath) from None
        except NotADirectoryError:
            raise InvalidArgument(f"{key!r}: a prefix of it is an object") from None
        if self._fsync:
            self._fsync_dir(os.path.dirname(dirpath))

    def _create_temp(self, key: str, dirpath: str) -> tuple[int, str]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for _ in range(100):
            tmp = os.path.join(dirpath, TMP_PREFIX + secrets.token_hex(8))
            try:
                self._makedirs(key, dirpath)
                return os.open(tmp, flags, 0o644), tmp
            except FileNotFoundError:
                continue  # a concurrent delete removed an (empty) directory; make it again
        raise Unavailable(f"{key!r}: directory keeps disappearing")

    def _pace(self, pace, nbytes: int) -> None:
        """Before a piece of `nbytes` of a paced put (in the put's thread)."""
        if self._closed:
            return
        rate = pace() if callable(pace) else pace
        if rate is not None:
            self._pacer.wait(nbytes, _check_pace(rate))

    def _put_sync(self, key: str, path: str, data: bytes | memoryview, if_absent: bool,
                  pace: float | Callable[[], float | None] | None = None) -> None:
        dirpath = os.path.dirname(path)
        try:
            fd, tmp = self._create_temp(key, dirpath)
        except OSError as e:
            raise Unavailable(f"put {key!r}: {e}") from e
        published = False
        try:
            try:
                parts = data if isinstance(data, list) else [data]
                if self._fsync and sum(len(p) for p in parts) > _PIECE_BYTES:
                    # a segment of several MiB: written back 128 KiB at a time, so the
                    # WAL's syncs on the same disk never queue behind all of it
                    write_parts_in_pieces(fd, parts, _PIECE_BYTES,
                                          None if pace is None else partial(self._pace, pace))
                else:
                    pwrite_parts(fd, parts, 0)
                if self._fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    if os.path.isdir(path):
                        raise InvalidArgument(f"{key!r} is a prefix of other keys") from None
                    raise ObjectExists(key) from None
            else:
                try:
                    os.replace(tmp, path)
                except IsADirectoryError:
                    raise InvalidArgument(f"{key!r} is a prefix of other keys") from None
            published = True
        except OSError as e:
            raise Unavailable(f"put {key!r}: {e}") from e
        finally:
            if not published or if_absent:
                _unlink_quietly(tmp)
        try:
            if self._fsync:
                self._fsync_dir(dirpath)
        except OSError as e:
            # The name is visible but may not survive a power loss.
            raise Indeterminate(f"put {key!r}: directory fsync failed: {e}") from e

    def _read_sync(self, key: str, path: str, start: int, end: int | None) -> bytes:
        try:
            with open(path, "rb") as f:
                if start:
                    f.seek(start)
                return f.read() if end is None else f.read(max(0, end - start))
        except _MISSING:
            raise ObjectNotFound(key) from None
        except OSError as e:
            raise Unavailable(f"get {key!r}: {e}") from e

    def _list_sync(self, prefix: str) -> list[str]:
        # Every key with this prefix lies below the prefix's last complete directory.
        head = prefix.rpartition("/")[0]
        if head:
            try:
                base = self._path(head)
            except InvalidArgument:
                return []  # no valid key can start with this prefix
        else:
            base = self.root
        keys: list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(base):
                rel = os.path.relpath(dirpath, self.root)
                relkey = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                dirnames[:] = [
                    d for d in dirnames
                    if (relkey + d + "/").startswith(prefix) or prefix.startswith(relkey + d + "/")
                ]
                keys.extend(
                    relkey + f for f in filenames
                    if not f.startswith(TMP_PREFIX) and (relkey + f).startswith(prefix)
                )
        except OSError as e:
            raise Unavailable(f"list {prefix!r}: {e}") from e
        keys.sort()
        return keys

    def _delete_sync(self, key: str, path: str) -> None:
        try:
            os.unlink(path)
        except _MISSING:
            return
        except OSError as e:
            raise Unavailable(f"delete {key!r}: {e}") from e
        # Remove directories left empty so the tree does not grow with deleted prefixes.
        # A concurrent put into such a directory retries its mkdir (see _create_temp).
        parent = os.path.dirname(path)
        while parent != self.root:
            try:
                os.rmdir(parent)
            except OSError:
                return
            parent = os.path.dirname(parent)


def _check_pace(rate) -> float:
    if not rate > 0:
        raise InvalidArgument(f"pace must be a positive number of bytes/s, not {rate!r}")
    return rate


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def measure_fdatasync(dir: str | os.PathLike[str], size: int = 65536,
                      n: int = 200) -> list[float]:
    """Seconds taken by each of `n` appends of `size` bytes followed by fdatasync.

    The raw device cost of a chunk write on this filesystem (without the temp-file create,
    link and directory fsync that `put` adds). Blocking: call it outside the event loop.
    """
    buf = os.urandom(size)
    fd, path = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dir)
    samples: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return samples
