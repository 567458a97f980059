"""The WAL's sync helper: a small process that makes local log files durable.

The event loop writes chunks into the page cache itself (microseconds) and hands the file
descriptors to this process (SCM_RIGHTS over a Unix socket) to sync them. A sync is a
handful of system calls that each block for a while; a thread of the server making them
gave the GIL up and waited to get it back after every one of them whenever the loop was
busy, and the loop waited for the GIL whenever that thread had it. Here the calls run in
parallel with the loop, on another core, and the loop reads one small answer per sync.
See docs/decisions/0010-wal-sync-helper.md.

Started as `python -I -S syncer.py FD [BELL]` with FD one end of a stream socket pair.
Each request is: length u16 | mode u8 | n u8 | n kinds (u8), with n descriptors attached;
the answer is n errno values (i32, 0 for success), one per descriptor, in order. Kinds:
1 a data file, 2 a directory (fsync). Modes: 1 "one flush" (start write-back of every data
file, wait for each, then one fdatasync: pure overwrites on ext4/XFS, see decision 0008),
0 an fdatasync per data file (write-back of all of them started first). The helper exits
when the socket reaches end of file (the server closed it, or died); SIGINT and SIGTERM
are the server's to handle, so it ignores them and finishes the sync under way.

BELL (Linux) is an eventfd the server writes after each request; the helper sleeps on it,
not on the socket. A message on a Unix socket (or a pipe) wakes its reader with a "sync"
hint (the sender is about to sleep), so the scheduler put the helper on the event loop's
own CPU, where it ran first and kept the loop off the CPU for the ~70 us it needs to start
a sync (decision 0010). An eventfd's wake-up carries no hint: the helper goes to an idle
CPU if there is one, and the loop carries on. Requests still travel over the socket (the
descriptors need it); the helper watches it for end of file only.
"""
from __future__ import annotations

import array
import os
import select
import signal
import socket
import struct
import sys

if __name__ == "__main__":  # isolated mode: only the standard library and this package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))

from s2core.diskio import (
    SFR_WRITE,
    SFR_WRITE_AND_WAIT,
    sync_file_range,
    sync_file_range_fn,
)

KIND_DATA, KIND_DIR = 1, 2
MODE_EACH, MODE_ONE_FLUSH = 0, 1
MAX_FDS = 64
_REQ = struct.Struct(">HBB")


def encode_request(mode: int, kinds: list[int]) -> bytes:
    body = struct.pack(f">BB{len(kinds)}B", mode, len(kinds), *kinds)
    return struct.pack(">H", len(body)) + body


def sync_all(mode: int, kinds: list[int], fds: list[int]) -> list[int]:
    """Run one request: the errno of each descriptor (0: it is durable)."""
    errs = [0] * len(fds)
    data = [i for i, k in enumerate(kinds) if k == KIND_DATA]

    def call(i: int, fn, *args) -> None:
        if errs[i]:
            return
        try:
            fn(fds[i], *args)
        except OSError as e:
            errs[i] = e.errno or 5

    if mode == MODE_ONE_FLUSH and sync_file_range_fn is not None:
        for i in data:  # every file's write-back starts before the device sees the first
            call(i, sync_file_range, 0, 0, SFR_WRITE)
        for i in data:
            call(i, sync_file_range, 0, 0, SFR_WRITE_AND_WAIT)
        ok = [i for i in data if not errs[i]]
        if ok:  # the files are clean: one fdatasync issues the device cache flush
            try:
                os.fdatasync(fds[ok[0]])
            except OSError as e:
                for i in ok:
                    errs[i] = e.errno or 5
    else:
        if sync_file_range_fn is not None and len(data) > 1:
            for i in data:
                try:
                    sync_file_range(fds[i], 0, 0, SFR_WRITE)
                except OSError:
                    pass  # the fdatasync reports it
        for i in data:
            call(i, os.fdatasync)
    for i, k in enumerate(kinds):
        if k == KIND_DIR:
            call(i, os.fsync)
    return errs


def _recv_nowait(sock: socket.socket) -> tuple[bytes, list[int]]:
    """socket.recv_fds without waiting (its `flags` are ignored before Python 3.12)."""
    data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_LEN(MAX_FDS * 4), socket.MSG_DONTWAIT)
    fds = array.array("i")
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def serve(sock: socket.socket, bell: int | None = None) -> None:
    buf = b""
    fds: list[int] = []
    poller = select.poll()
    if bell is None:
        poller.register(sock, select.POLLIN)
    else:
        os.set_blocking(bell, False)
        poller.register(bell, select.POLLIN)
        # end of file only: a request's bytes do not wake this poll (they come with a
        # "sync" wake-up, see the module's docstring); its doorbell does
        poller.register(sock, select.POLLRDHUP)
    while True:
        try:
            data, got = _recv_nowait(sock)
        except (BlockingIOError, InterruptedError):
            poller.poll()
            if bell is not None:
                try:
                    os.eventfd_read(bell)
                except BlockingIOError:
                    pass
            continue
        except OSError:
            return
        if not data:
            return
        buf += data
        fds += got
        while len(buf) >= 2:
            (length,) = struct.unpack_from(">H", buf)
            if len(buf) < 2 + length:
                break
            mode, n = buf[2], buf[3]
            kinds = list(buf[4:4 + n])
            buf = buf[2 + length:]
            mine, fds = fds[:n], fds[n:]
            if len(mine) != n:  # cannot happen with a well-behaved server
                errs = [9] * n  # EBADF
            else:
                errs = sync_all(mode, kinds, mine)
            for fd in mine:
                os.close(fd)
            sock.sendall(struct.pack(f">{n}i", *errs))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(socket.socket(fileno=int(sys.argv[1])),
          int(sys.argv[2]) if len(sys.argv) > 2 else None)


if __name__ == "__main__":
    main()
