"""SqliteMetadataStore specifics: several processes, lock waits, group commit, reopening."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from s2core.errors import Unavailable
from s2core.metadata import Versioned, VersionMismatch
from s2core.metadata.sqlite import SqliteMetadataStore

REPO_ROOT = Path(__file__).resolve().parents[2]

INCREMENTER = textwrap.dedent("""
    import asyncio, sys
    from s2core.metadata import VersionMismatch
    from s2core.metadata.sqlite import SqliteMetadataStore

    async def main(path, n):
        store = SqliteMetadataStore(path)
        conflicts = 0
        for _ in range(n):
            while True:
                cur = await store.get("counter")
                try:
                    await store.put("counter", b"%d" % (int(cur.value) + 1), cur.version)
                    break
                except VersionMismatch:
                    conflicts += 1
        await store.close()
        print(conflicts)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


async def test_processes_increment_without_lost_updates(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    store = SqliteMetadataStore(path)
    await store.create("counter", b"0")
    procs, per_proc = 4, 150
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", INCREMENTER, path, str(per_proc), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(procs)
    ]
    outputs = [await child.communicate() for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err.decode()
    print("version conflicts per process:", [int(out) for out, _ in outputs])
    got = await store.get("counter")
    assert got == Versioned(str(procs * per_proc).encode(), procs * per_proc + 1)
    await store.close()


async def test_waits_for_another_writer_then_succeeds(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    store = SqliteMetadataStore(path, busy_timeout_ms=5000)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    create = asyncio.create_task(store.create("k", b"v"))
    await asyncio.sleep(0.2)
    assert not create.done()
    assert await store.get("k") is None  # readers are not blocked by the writer
    other.execute("COMMIT")
    assert await create == 1
    other.close()
    await store.close()


async def test_lock_timeout_is_unavailable_and_applies_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    store = SqliteMetadataStore(path, busy_timeout_ms=50)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(Unavailable):
        await store.create("k", b"v")
    other.execute("ROLLBACK")
    other.close()
    assert await store.get("k") is None
    assert await store.create("k", b"v") == 1
    await store.close()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_group_commit_isolates_failed_conditions(tmp_path: Path, synchronous: str) -> None:
    store = SqliteMetadataStore(tmp_path / "m.db", synchronous=synchronous)
    await store.create("taken", b"x")
    results = await asyncio.gather(
        *(store.create(f"k{i}", b"v") for i in range(300)),
        store.create("taken", b"y"),
        store.put("taken", b"z", 1),
        return_exceptions=True)
    assert results[:300] == [1] * 300
    assert isinstance(results[300], VersionMismatch)
    assert results[301] == 2
    assert len(await store.list_prefix("k")) == 300
    await store.close()


async def test_cancelled_caller_does_not_disturb_others(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "m.db")
    tasks = [asyncio.create_task(store.create(f"k{i}", b"v")) for i in range(20)]
    await asyncio.sleep(0)
    tasks[5].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[5], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 5] == [1] * 19
    await store.close()


async def test_reopen_sees_committed_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SqliteMetadataStore(path, synchronous="NORMAL")
    await store.create("a", b"1")
    await store.put("a", b"2", 1)
    await store.close()
    store = SqliteMetadataStore(path)
    assert await store.get("a") == Versioned(b"2", 2)
    assert store.synchronous == "FULL"
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await store.close()


async def test_close_finishes_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SqliteMetadataStore(path)
    tasks = [asyncio.create_task(store.create(f"k{i:03d}", b"v")) for i in range(200)]
    await asyncio.sleep(0)  # every create is queued; the first group is committing
    await store.close()
    assert [t.result() for t in tasks] == [1] * 200
    store = SqliteMetadataStore(path)
    assert len(await store.list_prefix("k")) == 200
    await store.close()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_big_batches_behave_as_the_reference_store(tmp_path, seed, monkeypatch):
    """Batches of 64+ ops go through the SQL-only path (prepared on the loop): random big
    batches (creates, conditional and unconditional puts, right and wrong versions, text,
    binary and NUL values, deletes, duplicate keys) give the same versions, the same
    errors and the same final state as the in-memory reference store."""
    import random

    from s2core.errors import InvalidArgument
    from s2core.metadata.base import Op
    from s2core.metadata.memory import MemoryMetadataStore

    from s2core.metadata import sqlite as sqlite_store

    big = []
    real_big = sqlite_store._apply_big
    monkeypatch.setattr(sqlite_store, "_apply_big",
                        lambda conn, pieces: big.append(1) or real_big(conn, pieces))
    rng = random.Random(seed)
    ref = MemoryMetadataStore()
    store = SqliteMetadataStore(str(tmp_path / "m.db"))
    keys = [f"k/{i:05d}" for i in range(3000)]

    mixed = False  # whether this batch may carry values the SQL-only path cannot take

    def value():
        r = rng.random() if mixed else 1.0
        if r < 0.02:
            return bytes([0xff, rng.randrange(256)])  # not UTF-8: the threaded path
        if r < 0.04:
            return b"with\0nul"
        return (f'{{"n": {rng.randrange(10**6)}, "s": "\\u00e9\\"x"}}').encode()

    async def outcome(s, ops):
        try:
            return ("ok", await s.write_batch(ops))
        except VersionMismatch as e:
            return ("mismatch", e.key, e.expected, e.actual)
        except InvalidArgument as e:
            return ("invalid", str(e))

    seen = set()
    for _round in range(16):
        n = rng.choice([64, 65, 300, 999, 1000, 1001, 2500])
        chosen = rng.sample(keys, n)
        if rng.random() < 0.1:
            chosen[-1] = chosen[0]  # a duplicate key
        mixed = rng.random() < 0.25
        ops = []
        fail = rng.random() < 0.3  # this batch carries one op whose condition fails
        for k in chosen:
            cur = await ref.get(k)
            r = rng.random()
            if r < 0.01 and mixed:
                ops.append(Op("delete", k, None, None))
            elif r < 0.2:
                ops.append(Op("put", k, value(), 0))  # unconditional
            elif cur is None:
                ops.append(Op("put", k, value(), None))  # create-if-absent
            else:
                ops.append(Op("put", k, value(), cur.version))
        if fail:
            i = rng.randrange(len(ops))
            cur = await ref.get(ops[i].key)
            ops[i] = Op("put", ops[i].key, b"x", None if cur else rng.randrange(1, 9))
        want = await outcome(ref, ops)
        got = await outcome(store, ops)
        assert got == want
        seen.add(got[0])
    assert await store.list_prefix("k/") == await ref.list_prefix("k/")
    assert seen == {"ok", "mismatch", "invalid"} or seen == {"ok", "mismatch"}
    assert any(v.version > 2 for _, v in await store.list_prefix("k/"))
    assert 6 <= len(big) < 16, "most batches, not all, took the SQL-only path"
    await store.close()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_big_batches_run_in_order_on_a_background_thread(tmp_path, synchronous):
    """An offload-sized batch runs on its own thread at background CPU priority (never on
    the loop, not even with inline commits), between the writes queued before and after
    it, as one transaction like any write."""
    import threading

    from s2core.metadata.base import Op
    store = SqliteMetadataStore(tmp_path / "m.db", synchronous=synchronous)
    await store.create("before", b"0")
    batch = [Op("put", f"row/{i:05d}", b'{"n": %d}' % i, None) for i in range(2000)]
    before = asyncio.ensure_future(store.put("before", b"1", 1))
    big = asyncio.ensure_future(store.write_batch(batch))
    for _ in range(10_000):  # (the batch is prepared on the loop first, in slices)
        if any(bulk for _, _, bulk in store._pending) or store._bulk_pool is not None:
            break
        await asyncio.sleep(0)
    # queued behind the batch: sees its rows (a create of one of them must fail)
    after = asyncio.ensure_future(store.create("row/00007", b"again"))
    last = asyncio.ensure_future(store.put("before", b"2", 2))
    results = await asyncio.gather(before, big, after, last, return_exceptions=True)
    assert results[0] == 2 and results[1] == [1] * 2000
    assert isinstance(results[2], VersionMismatch) and results[3] == 3
    assert len(await store.list_prefix("row/")) == 2000

    def where():
        return threading.current_thread().name, os.sched_getscheduler(0)
    name, policy = await asyncio.get_running_loop().run_in_executor(store._bulk_pool, where)
    assert name.startswith("metadata-sqlite-bulk") and name != threading.current_thread().name
    if sys.platform.startswith("linux"):
        assert policy == os.SCHED_IDLE
    await store.close()
