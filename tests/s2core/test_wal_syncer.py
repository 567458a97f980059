"""The WAL's sync helper process and the device writer that drives it from the loop."""
import asyncio
import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from typing import ClassVar

import pytest

from s2core.wal import locallog, syncer
from s2core.wal.locallog import LocalLogReplica


def test_sync_all_reports_each_descriptor(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    r, w = os.pipe()  # fdatasync of a pipe fails with EINVAL
    try:
        os.write(fd, b"x" * 5000)
        for mode in (syncer.MODE_EACH, syncer.MODE_ONE_FLUSH):
            errs = syncer.sync_all(mode, [syncer.KIND_DATA, syncer.KIND_DATA, syncer.KIND_DIR],
                                   [fd, r, dirfd])
            assert errs[0] == 0 and errs[1] in (errno.EINVAL, errno.ESPIPE) and errs[2] == 0
    finally:
        for x in (fd, dirfd, r, w):
            os.close(x)


def test_the_helper_answers_requests_in_order_and_exits_at_end_of_file(tmp_path):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, "-I", "-S", locallog._SYNCER,
                             str(theirs.fileno())], pass_fds=[theirs.fileno()])
    theirs.close()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    r, w = os.pipe()
    try:
        os.write(fd, b"data")
        # two requests back to back: answers come in order, one per descriptor
        socket.send_fds(ours, [syncer.encode_request(syncer.MODE_EACH, [1, 1])], [fd, r])
        socket.send_fds(ours, [syncer.encode_request(syncer.MODE_ONE_FLUSH, [1])], [fd])
        got = b""
        while len(got) < 12:
            got += ours.recv(64)
        assert got == (0).to_bytes(4, "big") + errno.EINVAL.to_bytes(4, "big") + bytes(4)
        proc.send_signal(signal.SIGINT)  # the server's to handle: the helper carries on
        proc.send_signal(signal.SIGTERM)
        socket.send_fds(ours, [syncer.encode_request(syncer.MODE_EACH, [1])], [fd])
        assert ours.recv(64) == bytes(4)
        ours.close()
        assert proc.wait(timeout=10) == 0
    finally:
        for x in (fd, r, w):
            os.close(x)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux's")
def test_with_a_doorbell_the_helper_waits_for_it_not_for_the_socket(tmp_path):
    """A request on the socket alone would wake the helper as a 'sync' wake-up, onto the
    event loop's CPU and ahead of it: with a doorbell, the helper sleeps on the bell, and
    still leaves when the socket closes."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    proc = subprocess.Popen([sys.executable, "-I", "-S", locallog._SYNCER,
                             str(theirs.fileno()), str(bell)],
                            pass_fds=[theirs.fileno(), bell])
    theirs.close()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"data")
        ours.settimeout(10)
        socket.send_fds(ours, [syncer.encode_request(syncer.MODE_EACH, [1])], [fd])
        os.eventfd_write(bell, 1)
        assert ours.recv(64) == bytes(4)
        time.sleep(0.3)  # it has looked for more on the socket and sleeps on the bell
        ours.settimeout(0.5)
        socket.send_fds(ours, [syncer.encode_request(syncer.MODE_EACH, [1])], [fd])
        with pytest.raises(TimeoutError):
            ours.recv(64)  # not rung: not answered
        os.eventfd_write(bell, 1)
        ours.settimeout(10)
        assert ours.recv(64) == bytes(4)
        # two requests, one ring: both answered (the helper reads all that came)
        socket.send_fds(ours, [syncer.encode_request(syncer.MODE_EACH, [1])], [fd])
        socket.send_fds(ours, [syncer.encode_request(syncer.MODE_ONE_FLUSH, [1])], [fd])
        os.eventfd_write(bell, 1)
        got = b""
        while len(got) < 8:
            got += ours.recv(64)
        assert got == bytes(8)
        ours.close()
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(fd)
        os.close(bell)
        if proc.poll() is None:
            proc.kill()


def test_the_devices_helper_gets_a_doorbell_where_there_is_one(tmp_path):
    async def main():
        rep = LocalLogReplica(tmp_path / "r")
        try:
            await rep.put("k", b"v")
            helper = rep._device._syncer
            if hasattr(os, "eventfd"):
                assert helper.bell is not None and helper.proc.args[-1] == str(helper.bell)
            else:  # (macOS: the helper sleeps on the socket)
                assert helper.bell is None and len(helper.proc.args) == 5
        finally:
            await rep.close()
    asyncio.run(main())


def _syncer_proc(rep: LocalLogReplica) -> subprocess.Popen:
    return rep._device._syncer.proc


async def test_a_killed_helper_fails_its_puts_and_the_next_put_gets_a_new_one(tmp_path):
    r = LocalLogReplica(tmp_path / "r")
    await r.put("a", b"one")
    proc = _syncer_proc(r)
    proc.kill()
    proc.wait()
    with pytest.raises(OSError):  # its sync cannot have happened: the put is not acked
        await r.put("b", b"two")
    await r.put("c", b"three")  # a new helper (and, the old file being suspect, a new file)
    assert _syncer_proc(r) is not proc and _syncer_proc(r).poll() is None
    await r.close()
    assert proc.poll() is not None
    r = LocalLogReplica(tmp_path / "r")
    assert await r.get("a") == b"one" and await r.get("c") == b"three"
    await r.close()


async def test_a_sync_error_fails_the_put_and_moves_to_a_new_file(tmp_path, monkeypatch):
    r = LocalLogReplica(tmp_path / "r")
    await r.put("a", b"one")
    first_file = r._fileno
    pr, pw = os.pipe()
    real = locallog._Syncer.request
    calls = []

    def bad_once(self, mode, kinds, fds):
        calls.append(fds)
        if len(calls) == 1:
            fds = [pr] * len(fds)  # fdatasync of a pipe fails: as a disk error would
        return real(self, mode, kinds, fds)

    monkeypatch.setattr(locallog._Syncer, "request", bad_once)
    try:
        with pytest.raises(OSError):
            await r.put("b", b"two")
        await r.put("c", b"three")
    finally:
        os.close(pr)
        os.close(pw)
    assert r._fileno > first_file
    await r.close()
    r = LocalLogReplica(tmp_path / "r")
    assert await r.get("c") == b"three"
    await r.close()


class _FakeSyncer:
    """Stands in for the helper: records requests; the test answers them."""

    made: ClassVar[list] = []

    def __init__(self, loop, on_answer, on_lost) -> None:
        self.on_answer = on_answer
        self.requests: list = []
        _FakeSyncer.made.append(self)

    def request(self, mode, kinds, fds) -> None:
        self.requests.append(len(fds))

    def close(self) -> None:
        pass


async def test_pipelined_syncs_answer_in_order_and_an_error_fails_later_writes(
        tmp_path, monkeypatch):
    monkeypatch.setattr(locallog, "_Syncer", _FakeSyncer)
    _FakeSyncer.made = []
    r = LocalLogReplica(tmp_path / "r")
    outcomes: dict = {}

    def put(key):
        r.put_then(key, b"x", lambda err, key=key: outcomes.__setitem__(key, err))

    put("a")
    put("b")  # a second request while the first is under way (DEPTH 2)
    put("c")  # waits: two are under way
    fake = _FakeSyncer.made[0]
    assert fake.requests == [1, 1] and not outcomes
    fake.on_answer((errno.EIO,))  # the first fails: "b" was written to the same file
    assert isinstance(outcomes["a"], OSError)
    assert "b" not in outcomes  # answered only with its own sync, in order
    await asyncio.sleep(0)  # "c" goes out now that a slot is free (to a new file)
    assert fake.requests == [1, 1, 1]
    fake.on_answer((0,))
    assert isinstance(outcomes["b"], OSError), "an earlier failure of its file fails it"
    fake.on_answer((0,))
    assert outcomes["c"] is None
    assert await r.list() == ["c"]
    await r.close()


def test_the_helper_goes_when_its_server_dies(tmp_path):
    """A server killed with SIGKILL leaves no helper behind (it sees end of file)."""
    code = textwrap.dedent(f"""
        import asyncio, os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from s2core.wal.locallog import LocalLogReplica
        async def main():
            r = LocalLogReplica({str(tmp_path / "r")!r})
            await r.put("a", b"x")
            print(r._device._syncer.proc.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        pid = int(server.stdout.readline())
        server.kill()
        server.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            # (the helper is a child of the killed server: init reaps it once it exits)
            if _is_zombie(pid):
                return
            time.sleep(0.05)
        raise AssertionError("the sync helper outlived its server")
    finally:
        if server.poll() is None:
            server.kill()


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_many_concurrent_puts_from_several_replicas_all_land(tmp_path):
    reps = [LocalLogReplica(tmp_path / f"r{i}", file_bytes=64 * 1024) for i in range(3)]

    async def writer(i):
        for j in range(200):
            await asyncio.gather(*(x.put(f"k{i}-{j}", b"%d" % j * 50) for x in reps))

    await asyncio.gather(*(writer(i) for i in range(8)))
    for x in reps:
        await x.close()
    for i in range(3):
        x = LocalLogReplica(tmp_path / f"r{i}", file_bytes=64 * 1024)
        assert len(await x.list()) == 1600
        assert await x.get("k7-199") == b"199" * 50
        await x.close()


async def test_a_bug_in_the_writer_fails_its_puts_and_the_next_ones_go_through(
        tmp_path, monkeypatch):
    r = LocalLogReplica(tmp_path / "r")
    real = LocalLogReplica._write
    calls = []

    def buggy(self, puts):
        calls.append(len(puts))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(self, puts)

    monkeypatch.setattr(LocalLogReplica, "_write", buggy)
    with pytest.raises(RuntimeError):
        await r.put("a", b"one")
    await r.put("b", b"two")
    assert await r.list() == ["b"] and r._pending == 0
    await r.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_puts_deletes_and_reopens_keep_every_acked_entry(tmp_path, seed):
    """Small files (rotation and recycling all the time), three replicas, concurrent puts
    and deletes; after each reopen every acknowledged entry not deleted is there, intact."""
    import random
    rng = random.Random(seed)
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    live: dict[str, bytes] = {}
    n = 0
    for _round in range(4):
        reps = [LocalLogReplica(d, file_bytes=16 * 1024, spare_files=rng.choice([0, 1, 3]))
                for d in dirs]

        async def writer(k):
            nonlocal n
            for _ in range(60):
                if live and rng.random() < 0.3:
                    gone = rng.sample(sorted(live), min(len(live), rng.randint(1, 5)))
                    for key in gone:
                        del live[key]
                    await asyncio.gather(*(x.delete_many(gone) for x in reps))
                    continue
                n += 1
                key, data = f"k{n}", os.urandom(rng.randint(1, 3000))
                await asyncio.gather(*(x.put(key, data) for x in reps))
                live[key] = data

        await asyncio.gather(*(writer(k) for k in range(6)))
        for x in reps:
            await x.close()
        for d in dirs:
            x = LocalLogReplica(d, file_bytes=16 * 1024)
            present = set(await x.list())
            assert set(live) <= present, f"lost {sorted(set(live) - present)[:5]}"
            for key in rng.sample(sorted(live), min(20, len(live))):
                assert await x.get(key) == live[key]
            await x.close()


class _RecordingSyncer(_FakeSyncer):
    """A fake helper that keeps what each request syncs: (kinds, inode of each file)."""

    def request(self, mode, kinds, fds) -> None:
        self.requests.append((list(kinds), [os.fstat(fd).st_ino for fd in fds]))


async def test_lazy_copies_stay_out_of_the_sync_the_others_wait_for(tmp_path, monkeypatch):
    """Three replicas on one device, quorum 2: the third copy of a chunk is written after
    the others' sync request is sent and made durable by the next request (or one of its
    own after LAZY_S), so the acks wait for two copies on the device, not three."""
    monkeypatch.setattr(locallog, "_Syncer", _RecordingSyncer)
    _FakeSyncer.made = []
    reps = [LocalLogReplica(tmp_path / f"r{i}") for i in range(3)]
    ino = [os.fstat(r._fd).st_ino for r in reps]
    outcomes: dict = {}

    def put_chunk(key):
        for i, r in enumerate(reps):
            r.put_then(key, b"data-" + key.encode(),
                       lambda err, i=i: outcomes.__setitem__((key, i), err), lazy=i == 2)

    put_chunk("c1")
    for _ in range(3):
        await asyncio.sleep(0)  # (callbacks scheduled by the puts run: nothing more is sent)
    fake = _FakeSyncer.made[0]
    assert fake.requests == [([1, 1], [ino[0], ino[1]])]
    fake.on_answer((0, 0))
    assert outcomes == {("c1", 0): None, ("c1", 1): None}, "the quorum is answered"
    assert "c1" not in await reps[2].list(), "not durable on the third replica yet"

    put_chunk("c2")  # the next request makes the third copy of c1 durable too
    assert fake.requests[1] == ([1, 1, 1], [ino[0], ino[1], ino[2]])
    fake.on_answer((0, 0, 0))
    assert outcomes[("c1", 2)] is None and outcomes[("c2", 0)] is None
    assert ("c2", 2) not in outcomes

    deadline = time.monotonic() + 5  # no request follows: c2's copy gets one of its own
    while len(fake.requests) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert fake.requests[2] == ([1], [ino[2]])
    fake.on_answer((errno.EIO,))  # and a failed sync of a lazy copy fails that put
    assert isinstance(outcomes[("c2", 2)], OSError)
    assert await reps[2].list() == ["c1"]
    assert all(r._pending == 0 for r in reps)
    for r in reps:
        await r.close()


async def test_a_chunk_deleted_while_its_lazy_copy_awaits_its_sync_is_not_indexed(
        tmp_path, monkeypatch):
    """Garbage collection may delete a chunk while its third copy is written but not yet
    synced: the copy must not come back into the index when its sync ends (the entry would
    keep its file from ever being recycled)."""
    monkeypatch.setattr(locallog, "_Syncer", _RecordingSyncer)
    _FakeSyncer.made = []
    reps = [LocalLogReplica(tmp_path / f"r{i}") for i in range(3)]
    done: dict = {}
    for i, r in enumerate(reps):
        r.put_then("c1", b"x", lambda err, i=i: done.__setitem__(i, err), lazy=i == 2)
    for _ in range(3):
        await asyncio.sleep(0)
    fake = _FakeSyncer.made[0]
    fake.on_answer((0, 0))
    assert reps[2]._size > 0 and reps[2]._pending == 1, "written, waiting for a sync"
    for r in reps:
        await r.delete_many(["c1"])
    deadline = time.monotonic() + 5
    while len(fake.requests) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    fake.on_answer((0,))
    assert done == {0: None, 1: None, 2: None}
    assert await reps[2].list() == []
    assert reps[2]._live == {reps[2]._fileno: 0} and not reps[2]._gone
    for r in reps:
        await r.close()


async def test_a_lazy_copy_with_nothing_to_share_a_sync_with_is_synced_at_once(
        tmp_path, monkeypatch):
    """Replicas on different devices (here: a lazy put alone) are not held back."""
    monkeypatch.setattr(locallog, "_Syncer", _RecordingSyncer)
    _FakeSyncer.made = []
    r = LocalLogReplica(tmp_path / "r")
    outcomes = []
    r.put_then("k", b"v", outcomes.append, lazy=True)
    await asyncio.sleep(0)
    fake = _FakeSyncer.made[0]
    assert fake.requests == [([1], [os.fstat(r._fd).st_ino])]
    fake.on_answer((0,))
    assert outcomes == [None]
    await r.close()


async def test_lazy_copies_survive_file_rotation_and_close(tmp_path):
    """With small files the replicas move to new files while lazy copies wait for their
    sync (they keep their own descriptor of the old file); closing waits for them, and
    after a reopen the third replica holds every chunk."""
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    reps = [LocalLogReplica(d, file_bytes=16 * 1024) for d in dirs]
    loop = asyncio.get_running_loop()

    async def chunk(n):
        quorum = [loop.create_future() for _ in range(2)]
        data = os.urandom(3000) + b"%d" % n
        for i, r in enumerate(reps):
            done = (lambda err, f=quorum[i]: f.set_result(err)) if i < 2 else \
                (lambda err: None)
            r.put_then(f"c{n:04d}", data, done, lazy=i == 2)
        assert await asyncio.gather(*quorum) == [None, None]
        return data

    written = {}
    for n in range(60):
        written[f"c{n:04d}"] = await chunk(n)
        if n % 7 == 0:
            await asyncio.sleep(0.005)  # now and then a pause: the lazy timer's request
    assert reps[2]._fileno > 3, "the files rotated"
    for r in reps:
        await r.close()
    for d in dirs:
        r = LocalLogReplica(d, file_bytes=16 * 1024)
        assert await r.list() == sorted(written)
        for key in ("c0000", "c0031", "c0059"):
            assert await r.get(key) == written[key]
        await r.close()


async def test_a_replica_with_urgent_and_lazy_puts_in_one_flush_syncs_and_answers_both(
        tmp_path, monkeypatch):
    """A retried copy (urgent) and a later chunk's lazy copy for the same replica can meet
    in one flush: both go into its sync, both are answered and counted (close() waits for
    every put it counted)."""
    monkeypatch.setattr(locallog, "_Syncer", _RecordingSyncer)
    _FakeSyncer.made = []
    reps = [LocalLogReplica(tmp_path / f"r{i}") for i in range(3)]
    outcomes: dict = {}

    def put(i, key, lazy=False):
        reps[i].put_then(key, b"v", lambda err: outcomes.__setitem__((i, key), err),
                         lazy=lazy)

    put(0, "x1")
    await asyncio.sleep(0)
    put(0, "x2")
    await asyncio.sleep(0)
    fake = _FakeSyncer.made[0]
    assert len(fake.requests) == 2  # DEPTH requests under way: what follows waits
    put(2, "k0")  # a retry: urgent
    put(0, "k1")
    put(1, "k1")
    put(2, "k1", lazy=True)
    fake.on_answer((0,))
    await asyncio.sleep(0)
    assert len(fake.requests[2][1]) == 3, "one sync for the three replicas"
    fake.on_answer((0,))
    fake.on_answer((0, 0, 0))
    assert outcomes == {(0, "x1"): None, (0, "x2"): None, (2, "k0"): None, (0, "k1"): None,
                        (1, "k1"): None, (2, "k1"): None}
    assert [r._pending for r in reps] == [0, 0, 0]
    for r in reps:
        await asyncio.wait_for(r.close(), 5)


async def test_a_writer_bug_after_its_sync_request_leaves_answers_in_order(
        tmp_path, monkeypatch):
    """A bug after the request went to the helper fails that batch's puts once the answer
    comes; the answer is not taken for the next batch's (which would then be acked before
    its own sync) and no answer is left without its batch."""
    reps = [LocalLogReplica(tmp_path / f"r{i}") for i in range(3)]
    dev = reps[0]._device
    assert all(r._device is dev for r in reps)
    real_arm = locallog._Device._arm_lazy_timer
    bugs = [1]

    def arm(self):
        if bugs:
            bugs.pop()
            raise RuntimeError("a bug")
        real_arm(self)

    orphans = []
    real_answered = locallog._Device._answered

    def answered(self, errs):
        if not any(b.errs is None and b.nfds for b in self._batches):
            orphans.append(errs)
        real_answered(self, errs)

    monkeypatch.setattr(locallog._Device, "_arm_lazy_timer", arm)
    monkeypatch.setattr(locallog._Device, "_answered", answered)
    loop = asyncio.get_running_loop()
    first = [loop.create_future() for _ in range(2)]
    second = [loop.create_future() for _ in range(2)]

    def then(fut, nxt=None):
        def done(err):
            fut.set_result(err)
            if nxt is not None:  # the next puts right away: before the first answer
                for i, f in enumerate(second):
                    reps[i].put_then(f"b{i}", b"two", then(f))
        return done

    reps[0].put_then("a0", b"one", then(first[0], nxt=True))
    reps[1].put_then("a1", b"one", then(first[1]))
    reps[2].put_then("a2", b"one", lambda err: None, lazy=True)
    errs = await asyncio.wait_for(asyncio.gather(*first), 5)
    assert all(isinstance(e, RuntimeError) for e in errs)
    assert await asyncio.wait_for(asyncio.gather(*second), 5) == [None, None]
    await reps[0].put("c", b"three")
    assert orphans == []
    assert await reps[0].list() == ["b0", "c"] and await reps[1].list() == ["b1"]
    for r in reps:
        await r.close()


def test_a_lazy_copy_waits_for_its_own_request_without_spinning_the_loop(tmp_path,
                                                                          monkeypatch):
    """uvloop's timers have millisecond resolution and may fire before the time asked:
    the lazy timer must not re-arm itself until the loop's clock catches up (each re-arm
    fired on the next iteration: the loop spun for up to 1 ms per lazy copy)."""
    uvloop = pytest.importorskip("uvloop")

    class Answering(_FakeSyncer):  # answers every request it was sent, when told to
        def request(self, mode, kinds, fds) -> None:
            self.requests.append(len(fds))

        def answer_all(self) -> None:
            sent, self.requests = self.requests, []
            for n in sent:
                self.on_answer((0,) * n)

    monkeypatch.setattr(locallog, "_Syncer", Answering)
    fired = []
    real = locallog._Device._on_lazy_timer

    def on_lazy_timer(self, *args):
        fired.append(self.loop.time())
        real(self, *args)

    monkeypatch.setattr(locallog._Device, "_on_lazy_timer", on_lazy_timer)

    async def main():
        _FakeSyncer.made = []
        reps = [LocalLogReplica(tmp_path / f"r{i}") for i in range(3)]
        loop = asyncio.get_running_loop()
        for n in range(40):
            copies = [loop.create_future() for _ in range(3)]
            for i, r in enumerate(reps):
                r.put_then(f"c{n}", b"data", lambda err, f=copies[i]: f.set_result(err),
                           lazy=i == 2)
            fake = _FakeSyncer.made[0]
            while not copies[1].done():
                fake.answer_all()
                await asyncio.sleep(0)
            while not copies[2].done():  # its own request, after LAZY_S
                fake.answer_all()
                await asyncio.sleep(0.0002)
            assert copies[2].result() is None
            await asyncio.sleep(0.0001 * (n % 7))  # (start at different phases of a ms)
        for r in reps:
            await r.close()

    uvloop.run(main())
    assert len(fired) == 40, f"{len(fired)} timer callbacks for 40 lazy copies"
