"""PostgresMetadataStore against a real PostgreSQL server: the shared metadata contract,
several stores on one database, failures (server stopped, commit cut off), and the whole
StreamStore on PostgreSQL metadata.

The server is Debian's `postgresql` package, run from /usr/lib/postgresql/*/bin in a temp
directory on 127.0.0.1 and an ephemeral port (as the `postgres` user when run as root).
Without those binaries the tests are skipped, or fail when the CI environment variable is
set. Tests run in a database whose default collation is ICU en-US, which orders keys
unlike bytes, so the table's COLLATE "C" is what the ordering tests check.
"""
from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from test_metadata_contract import (  # noqa: F401 - the contract, run on the fixture below
    test_closed_store_refuses,
    test_concurrent_check_and_set_loses_nothing,
    test_concurrent_creates_one_winner,
    test_create_get,
    test_delete,
    test_list_after_deletes_and_recreates,
    test_list_prefix,
    test_list_prefix_pages,
    test_put_if_version,
    test_put_version_zero_is_unconditional,
    test_unicode_keys_order_like_python,
    test_values_are_bytes,
    test_write_batch_all_or_nothing,
    test_write_batch_rejects_bad_ops,
)

from s2core.config import load_config
from s2core.errors import Closed, Indeterminate, InvalidArgument, Unavailable
from s2core.metadata import Op, Versioned, VersionMismatch, open_metadata_store
from s2core.metadata.postgres import PostgresMetadataStore
from s2core.records import AppendRecord
from s2core.server import close_store, open_store

PASSWORD = "pg-test-s3cret"
DATABASE = "s2core"


def _postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and postgres."""
    found = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
             if all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
               default=None)


def _no_postgres(reason: str) -> None:
    message = f"POSTGRESQL METADATA TESTS NOT RUN: {reason} (Debian: apt-get install postgresql)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A throwaway PostgreSQL cluster in a temp directory on 127.0.0.1."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_postgres = os.geteuid() == 0  # the server refuses to run as root
        self.root = Path(tempfile.mkdtemp(prefix="s2core-pg-"))
        self.datadir = self.root / "data"
        self.port = 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        done = self.run("initdb", "-D", str(self.datadir), "-U", "postgres",
                        "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                        "--locale=C", "--no-sync")
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}{done.stderr}"

    def start(self) -> None:
        """Start on the current port, or on a free one if none was chosen yet."""
        for _ in range(3):  # another process may take a just-probed free port
            port = self.port or _free_port()
            # fsync=off: these tests restart the server cleanly, never pull the plug.
            options = (f"-c listen_addresses=127.0.0.1 -c port={port} "
                       "-c unix_socket_directories='' -c fsync=off -c max_connections=60 "
                       "-c shared_buffers=16MB")
            done = self.run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir),
                            "-l", str(self.root / "server.log"), "-o", options)
            if done.returncode == 0:
                self.port = port
                return
        log = (self.root / "server.log").read_text(errors="replace")
        raise AssertionError(f"PostgreSQL did not start:\n{done.stdout}{done.stderr}\n{log}")

    def stop(self) -> None:
        done = self.run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.datadir))
        assert done.returncode == 0, f"pg_ctl stop failed:\n{done.stdout}{done.stderr}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
             "postgres", "-d", database, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=False, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PGPASSWORD": PASSWORD})
        assert done.returncode == 0, f"psql {sql!r} failed:\n{done.stderr}"
        return done.stdout.strip()

    def url(self, database: str = DATABASE, query: str = "", scheme: str = "postgresql") -> str:
        base = f"{scheme}://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"
        return f"{base}?{query}" if query else base

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url("postgres"))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _server() -> Iterator[PgServer]:
    bindir = _postgres_bindir()
    if bindir is None:
        _no_postgres("no initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin")
    assert bindir is not None
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _user_exists("postgres")):
        _no_postgres("running as root needs runuser and the postgres user")
    server = PgServer(bindir)
    try:
        server.init()
        server.start()
        try:
            # ICU en-US orders 'B', 'a', '_' unlike bytes: the key column must not inherit it.
            server.psql(f"CREATE DATABASE {DATABASE} TEMPLATE template0 ENCODING 'UTF8' "
                        "LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
            order = server.psql("SELECT string_agg(x, ',' ORDER BY x) "
                                "FROM unnest(ARRAY['B', 'a', '_']) x", DATABASE)
            assert order != "B,_,a", "the test database should not sort by bytes by default"
            yield server
        finally:
            server.stop()
    finally:
        server.remove()


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server most tests share (each test uses its own table)."""
    yield from _server()


@pytest.fixture(scope="session")
def spare_pg_server() -> Iterator[PgServer]:
    """A second server for tests that stop it or reconfigure it."""
    yield from _server()


def fresh_table() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def store(pg_server: PgServer) -> AsyncIterator[PostgresMetadataStore]:
    s = open_metadata_store(pg_server.url(query=f"table={fresh_table()}"))
    assert isinstance(s, PostgresMetadataStore)
    yield s
    await s.close()


@pytest.fixture
async def two_stores(pg_server: PgServer
                     ) -> AsyncIterator[tuple[PostgresMetadataStore, PostgresMetadataStore]]:
    """Two stores (two pools, as two processes would have) on one table."""
    table = fresh_table()
    a = PostgresMetadataStore(pg_server.url(), table=table)
    b = PostgresMetadataStore(pg_server.url(), table=table)
    yield a, b
    await a.close()
    await b.close()


# -- URLs and configuration ------------------------------------------------------------


async def test_factory_options_and_scheme(pg_server: PgServer) -> None:
    table = fresh_table()
    s = open_metadata_store(pg_server.url(
        query=f"table={table}&pool_size=3&application_name=s2core-{table}",
        scheme="postgres"))
    assert isinstance(s, PostgresMetadataStore)
    assert (s.table, s.pool_size) == (table, 3)
    assert PASSWORD not in s.where and str(pg_server.port) in s.where
    await s.create("k", b"v")
    # a parameter that is not the store's reaches the server as a setting
    conn = await pg_server.admin()
    try:
        names = {r[0] for r in await conn.fetch("SELECT application_name FROM pg_stat_activity")}
    finally:
        await conn.close()
    assert f"s2core-{table}" in names
    await s.close()
    again = open_metadata_store(pg_server.url(query=f"table={table}"))
    assert await again.get("k") == Versioned(b"v", 1)  # durable across pools
    await again.close()


@pytest.mark.parametrize("url", [
    "postgresql://u:p@h/db?table=bad-name",
    "postgresql://u:p@h/db?table=Upper",
    "postgresql://u:p@h/db?pool_size=0",
    "postgresql://u:p@h/db?pool_size=many",
    "postgresql://u:p@h/db?command_timeout_s=-1",
    "mysql://u:p@h/db",
])
def test_factory_refuses(url: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        open_metadata_store(url)
    assert ":p@" not in str(e.value)


async def test_unreachable_server_is_unavailable() -> None:
    s = PostgresMetadataStore(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{_free_port()}/x",
                              connect_timeout_s=5)
    with pytest.raises(Unavailable) as e:
        await s.get("k")
    assert PASSWORD not in str(e.value)
    with pytest.raises(Unavailable):
        await s.create("k", b"v")
    await s.close()
    with pytest.raises(Closed):
        await s.get("k")


async def test_wrong_password_is_unavailable(pg_server: PgServer) -> None:
    s = PostgresMetadataStore(pg_server.url().replace(PASSWORD, "wrong"))
    with pytest.raises(Unavailable):
        await s.get("k")
    await s.close()


async def test_table_sorting_by_another_collation_is_refused(pg_server: PgServer) -> None:
    table = fresh_table()
    pg_server.psql(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, value BYTEA NOT NULL, "
                   "version BIGINT NOT NULL)", DATABASE)
    s = PostgresMetadataStore(pg_server.url(), table=table)
    with pytest.raises(InvalidArgument, match="collation"):
        await s.get("k")
    await s.close()


async def test_synchronous_commit_off_is_refused(pg_server: PgServer) -> None:
    s = open_metadata_store(pg_server.url(query="synchronous_commit=off"))
    with pytest.raises(InvalidArgument, match="synchronous_commit"):
        await s.get("k")
    await s.close()


async def test_table_layout(store: PostgresMetadataStore, pg_server: PgServer) -> None:
    await store.create("k", b"\x00\xff")
    columns = pg_server.psql(
        "SELECT string_agg(column_name || ' ' || data_type || ' ' || "
        "coalesce(collation_name, '-') || ' ' || is_nullable, '; ' ORDER BY ordinal_position) "
        f"FROM information_schema.columns WHERE table_name = '{store.table}'", DATABASE)
    assert columns == "key text C NO; value bytea - NO; version bigint - NO"
    assert pg_server.psql(f"SELECT encode(value, 'hex') || ' ' || version FROM {store.table}",
                          DATABASE) == "00ff 1"


# -- keys PostgreSQL cannot store ------------------------------------------------------


async def test_nul_in_keys(store: PostgresMetadataStore) -> None:
    for write in (store.create("a\x00b", b""), store.put("a\x00", b"", 0),
                  store.delete("\x00"), store.write_batch([Op("put", "x\x00", b"")])):
        with pytest.raises(InvalidArgument):
            await write
    with pytest.raises(InvalidArgument):
        await store.get("a\x00b")
    for k in ("a", "a\x01", "ab", "b"):
        await store.create(k, b"")
    assert await store.list_prefix("a\x00") == []
    assert [k for k, _ in await store.list_prefix("a", start_after="a\x00")] == ["a\x01", "ab"]
    assert [k for k, _ in await store.list_prefix("", start_after="a\x00z")] == [
        "a\x01", "ab", "b"]


# -- several stores on one database ----------------------------------------------------


async def test_two_stores_create_table_and_one_create_wins(two_stores) -> None:
    a, b = two_stores
    assert await asyncio.gather(a.get("x"), b.get("x")) == [None, None]  # both create the table
    results = await asyncio.gather(
        *(s.create("once", bytes([i])) for i in range(12) for s in (a, b)),
        return_exceptions=True)
    assert results.count(1) == 1, results
    assert all(isinstance(r, VersionMismatch) for r in results if r != 1), results
    winner = results.index(1)
    assert await b.get("once") == Versioned(bytes([winner // 2]), 1)


async def test_two_stores_check_and_set_loses_nothing(two_stores) -> None:
    a, b = two_stores
    await a.create("counter", b"0")

    async def increment(s: PostgresMetadataStore) -> int:
        conflicts = 0
        while True:
            cur = await s.get("counter")
            assert cur is not None
            try:
                await s.put("counter", b"%d" % (int(cur.value) + 1), cur.version)
                return conflicts
            except VersionMismatch:
                conflicts += 1

    conflicts = await asyncio.gather(*(increment(s) for _ in range(20) for s in (a, b)))
    assert await a.get("counter") == Versioned(b"40", 41)
    assert sum(conflicts) > 0, "the writers never raced: the test proves nothing"


async def test_two_stores_conditional_put_one_winner(two_stores) -> None:
    a, b = two_stores
    await a.create("leader", b"nobody")
    results = await asyncio.gather(a.put("leader", b"a", 1), b.put("leader", b"b", 1),
                                   return_exceptions=True)
    assert results.count(2) == 1, results
    winner = results.index(2)
    loser = results[1 - winner]
    assert isinstance(loser, VersionMismatch) and (loser.expected, loser.actual) == (1, 2)
    assert await a.get("leader") == Versioned(b"ab"[winner:winner + 1], 2)


async def test_two_stores_crossing_batches_neither_deadlock_nor_lose(two_stores) -> None:
    a, b = two_stores
    for round_ in range(8):
        keys = [f"r{round_}/k{i}" for i in range(10)]
        await asyncio.gather(  # absent keys, inserted by both in opposite orders
            a.write_batch([Op("put", k, b"a", 0) for k in keys]),
            b.write_batch([Op("put", k, b"b", 0) for k in reversed(keys)]))
        rows = await a.list_prefix(f"r{round_}/")
        assert [k for k, _ in rows] == keys
        assert {v.version for _, v in rows} == {2}
        assert len({v.value for _, v in rows}) == 1, "one batch applied wholly after the other"


async def test_two_stores_batch_conditions_are_atomic(two_stores) -> None:
    a, b = two_stores
    await a.write_batch([Op("put", "x", b"0"), Op("put", "y", b"0")])

    async def move(s: PostgresMetadataStore, n: int) -> int:
        done = 0
        for _ in range(n):
            while True:
                x, y = await s.get("x"), await s.get("y")
                assert x is not None and y is not None
                try:
                    await s.write_batch([
                        Op("put", "x", b"%d" % (int(x.value) + 1), x.version),
                        Op("put", "y", b"%d" % (int(y.value) - 1), y.version)])
                    done += 1
                    break
                except VersionMismatch:
                    pass
        return done

    assert await asyncio.gather(move(a, 15), move(b, 15)) == [15, 15]
    x, y = await a.get("x"), await a.get("y")
    assert (x.value, y.value, x.version, y.version) == (b"30", b"-30", 31, 31)


# -- failures --------------------------------------------------------------------------


async def test_server_stopped_is_unavailable_then_recovers(spare_pg_server: PgServer) -> None:
    server = spare_pg_server
    s = PostgresMetadataStore(server.url("postgres"), table=fresh_table(),
                              connect_timeout_s=5)
    await s.create("k", b"v1")
    server.stop()
    try:
        for op in (s.get("k"), s.put("k", b"v2", 1), s.create("new", b""),
                   s.list_prefix(""), s.write_batch([Op("delete", "k")])):
            with pytest.raises(Unavailable) as e:
                await op
            assert PASSWORD not in str(e.value)
    finally:
        server.start()
    assert await s.get("k") == Versioned(b"v1", 1)  # nothing applied; the pool reconnects
    assert await s.put("k", b"v2", 1) == 2
    await s.close()
    with pytest.raises(Closed):
        await s.put("k", b"v3", 2)


async def test_commit_cut_off_is_indeterminate(spare_pg_server: PgServer) -> None:
    """A commit waiting for a synchronous standby that never comes, ended by the server:
    the client cannot tell, and indeed the transaction had committed locally."""
    server = spare_pg_server
    s = PostgresMetadataStore(server.url("postgres"), table=fresh_table())
    await s.create("k", b"v1")
    admin = await server.admin()
    try:
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        await admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.3)  # backends reread the configuration between commands
        put = asyncio.ensure_future(s.put("k", b"v2", 1))
        deadline = time.monotonic() + 20
        while not (pids := await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'")):
            assert time.monotonic() < deadline and not put.done(), "no commit waited"
            await asyncio.sleep(0.05)
        await admin.execute("SELECT pg_terminate_backend($1)", pids[0][0])
        with pytest.raises(Indeterminate):
            await put
    finally:
        await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
    assert await s.get("k") == Versioned(b"v2", 2)
    await s.close()


async def test_close_waits_for_operations_in_flight(store: PostgresMetadataStore) -> None:
    await store.create("k", b"0")
    writes = [asyncio.ensure_future(store.put("k", b"x", 0)) for _ in range(10)]
    await asyncio.sleep(0)
    await store.close()
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(o, (int, Closed)) for o in outcomes), outcomes
    with pytest.raises(Closed):
        await store.list_prefix("")


# -- the stream store on PostgreSQL metadata -------------------------------------------


async def test_stream_store_on_postgres_metadata(pg_server: PgServer, tmp_path: Path) -> None:
    table = fresh_table()
    cfg = load_config(None, env={}, overrides={
        "server.data_dir": str(tmp_path), "metadata.url": pg_server.url(query=f"table={table}")})
    basin = cfg["server"]["default_basin"]
    store = await open_store(cfg)
    assert isinstance(store.metadata.inner, PostgresMetadataStore)  # (settling wrapper)
    await store.create_stream(basin, "events", {"retention_policy": {"infinite": {}}})
    bodies = [b"event-%03d" % i for i in range(30)]
    for body in bodies:
        await store.append(basin, "events", [AppendRecord(body)])
    await close_store(store)  # (its WAL directory too: a server holds it while open)

    probe = PostgresMetadataStore(pg_server.url(), table=table)
    assert [k for k, _ in await probe.list_prefix(f"stream/{basin}/")] == [
        f"stream/{basin}/events"]
    await probe.close()

    store = await open_store(cfg)
    batch = await store.read(basin, "events", seq_num=0, count=1000)
    assert [r.body for r in batch.records] == bodies
    assert (await store.append(basin, "events", [AppendRecord(b"after")])).start.seq_num == 30
    await close_store(store)
