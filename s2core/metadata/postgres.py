"""The scale-out metadata store: one PostgreSQL table, shareable by processes on many hosts.

See docs/decisions/0007-postgres-metadata.md for the choices and what is durable when. In
short:

- One table `kv(key TEXT COLLATE "C" PRIMARY KEY, value BYTEA, version BIGINT)`, created on
  first use if absent. The "C" collation compares UTF-8 bytes, so keys list in Python str
  order as with SQLite, and `list_prefix` is a primary-key range scan ('%' and '_' are
  plain characters). An existing table whose key column has another collation is refused.
- Every write (create, put, delete, batch) is one READ COMMITTED transaction: lock the
  batch's existing rows with `SELECT ... ORDER BY key FOR UPDATE`, check every condition
  with the shared rules, then apply the ops in key order. An absent key is written with
  `INSERT ... ON CONFLICT DO NOTHING`; if another writer created it after our SELECT, the
  whole transaction is retried, and the retry sees and locks that row. Row locks and
  inserts are always taken in key order, so two batches never deadlock.
- Durability is the server's: a commit is acknowledged once its WAL is flushed (and, with
  synchronous standbys, replicated as `synchronous_commit` says). synchronous_commit=off is
  refused: it acknowledges commits a crash may lose (lease epochs must never go back).
- Errors: a failed connection, or a failure the server reports before COMMIT, is
  Unavailable (nothing applied: the server drops an unfinished transaction); a COMMIT that
  fails is Indeterminate (it may have committed, e.g. when a synchronous-replication wait
  is cut off).
- The connection pool opens on first use, since `open_metadata_store` is synchronous.

PostgreSQL text cannot hold NUL, so keys containing it are refused (InvalidArgument);
`list_prefix` accepts them in `prefix` and `start_after` (no stored key can contain one).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from s2core.errors import Closed, Indeterminate, InvalidArgument, S2Error, Unavailable
from s2core.metadata.base import Op, Versioned
from s2core.metadata.rules import check_key, check_ops, check_value, next_version, prefix_end

SCHEMES = ("postgresql", "postgres")
# URL query parameters that configure this store; every other one goes to the driver
# (which passes unknown ones to the server as settings, e.g. application_name).
STORE_OPTIONS = {"table": str, "pool_size": int, "connect_timeout_s": float,
                 "command_timeout_s": float}
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_BYTE_ORDER_COLLATIONS = ("C", "POSIX")
# The connection failed, or the server refused the statement: it did not apply.
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
              asyncpg.InternalClientError)

_KEY_COLLATION = """SELECT co.collname FROM pg_attribute a
    JOIN pg_collation co ON co.oid = a.attcollation
    WHERE a.attrelid = to_regclass($1) AND a.attname = 'key' AND NOT a.attisdropped"""


class _CreateRaced(Exception):
    """Another writer created a key this transaction saw absent: retry the transaction."""


class _Statements:
    """The SQL for one table."""

    def __init__(self, table: str) -> None:
        assert _TABLE_NAME.fullmatch(table), table
        self.table = f'"{table}"'
        self.schema = (f'CREATE TABLE IF NOT EXISTS {self.table} ('
                       'key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL, '
                       'version BIGINT NOT NULL)')
        self.get = f"SELECT value, version FROM {self.table} WHERE key = $1"
        self.lock = (f"SELECT key, version FROM {self.table} WHERE key = ANY($1::text[]) "
                     "ORDER BY key FOR UPDATE")
        self.insert = (f"INSERT INTO {self.table} (key, value, version) VALUES ($1, $2, $3) "
                       "ON CONFLICT (key) DO NOTHING RETURNING version")
        self.update = f"UPDATE {self.table} SET value = $2, version = $3 WHERE key = $1"
        self.delete = f"DELETE FROM {self.table} WHERE key = $1"

    def scan(self, prefix: str, start_after: str, limit: int | None) -> tuple[str, list[Any]]:
        """The range scan for `list_prefix` (NUL-free arguments) and its parameters."""
        if start_after >= prefix:
            sql, args = f"SELECT key, value, version FROM {self.table} WHERE key > $1", [
                start_after]
        else:
            sql, args = f"SELECT key, value, version FROM {self.table} WHERE key >= $1", [
                prefix]
        end = prefix_end(prefix)
        if end is not None:
            args.append(end)
            sql += f" AND key < ${len(args)}"
        sql += " ORDER BY key"
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        return sql, args


class PostgresMetadataStore:
    """MetadataStore on one PostgreSQL table (asyncpg pool), shareable by many processes.

    `dsn` is a postgresql:// (or postgres://) URL; query parameters other than this
    store's options go to the driver. Nothing connects until the first operation.
    """

    def __init__(self, dsn: str, *, table: str = "kv", pool_size: int = 8,
                 connect_timeout_s: float = 10.0, command_timeout_s: float = 30.0) -> None:
        parts = urlsplit(dsn)
        if parts.scheme not in SCHEMES:
            raise InvalidArgument(f"not a PostgreSQL URL (postgresql://...): {parts.scheme}://")
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
            raise InvalidArgument(f"table must match {_TABLE_NAME.pattern}, got {table!r}")
        if pool_size < 1 or connect_timeout_s <= 0 or command_timeout_s <= 0:
            raise InvalidArgument("pool_size and the timeouts must be positive")
        self.table = table
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        # For messages: the server and database, never the credentials.
        self.where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        self._dsn = dsn
        self._sql = _Statements(table)
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **opts: Any) -> PostgresMetadataStore:
        """A store from a URL whose query may carry STORE_OPTIONS (keyword options win)."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        own: dict[str, Any] = {}
        for name, raw in query:
            if name in STORE_OPTIONS:
                try:
                    own[name] = STORE_OPTIONS[name](raw)
                except ValueError:
                    raise InvalidArgument(f"metadata URL option {name}={raw!r}") from None
        own.update(opts)
        driver_query = urlencode([(k, v) for k, v in query if k not in STORE_OPTIONS])
        return cls(urlunsplit(parts._replace(query=driver_query)), **own)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, key: str) -> Versioned | None:
        """The value and version, or None if absent."""
        self._check_open()
        rows = await self._read(self._sql.get, [_check_pg_key(key)])
        return Versioned(rows[0][0], rows[0][1]) if rows else None

    async def list_prefix(
        self, prefix: str, *, start_after: str = "", limit: int | None = None
    ) -> list[tuple[str, Versioned]]:
        """Keys with `prefix`, ascending, strictly after `start_after`, at most `limit`."""
        self._check_open()
        if limit is not None and limit < 0:
            raise InvalidArgument(f"negative limit {limit}")
        if "\x00" in prefix:
            return []  # no stored key contains NUL
        # Cutting start_after at a NUL keeps the same keys after it: none lie between.
        sql, args = self._sql.scan(prefix, start_after.split("\x00", 1)[0], limit)
        return [(k, Versioned(v, ver)) for k, v, ver in await self._read(sql, args)]

    # -- writes: one transaction each ------------------------------------------------------

    async def create(self, key: str, value: bytes) -> int:
        """Create-if-absent; returns 1. VersionMismatch if present."""
        op = Op("put", _check_pg_key(key), check_value(value), None)
        return (await self._write([op]))[1][0]

    async def put(self, key: str, value: bytes, expected_version: int) -> int:
        """Replace iff at `expected_version` (0: unconditionally); returns the new version."""
        op = check_ops([Op("put", key, check_value(value), expected_version)])[0]
        _check_pg_key(op.key)
        return (await self._write([op]))[1][0]

    async def delete(self, key: str, expected_version: int | None = None) -> bool:
        """Delete (iff at `expected_version`, if given); returns whether it existed."""
        op = check_ops([Op("delete", key, None, expected_version)])[0]
        _check_pg_key(op.key)
        return (await self._write([op]))[0][0] is not None

    async def write_batch(self, ops: list[Op]) -> list[int]:
        """Apply `ops` atomically (one transaction), or raise VersionMismatch and apply none."""
        ops = [Op(op.kind, op.key, None if op.value is None else bytes(op.value),
                  op.expected_version) for op in check_ops(list(ops))]
        for op in ops:
            _check_pg_key(op.key)
        if not ops:
            self._check_open()
            return []
        return (await self._write(ops))[1]

    async def close(self) -> None:
        """Let operations in flight finish, then close every connection."""
        if self._closed:
            return
        self._closed = True
        async with self._opening:  # a pool being opened is closed here, not leaked
            pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.command_timeout_s)
            except TimeoutError:
                pool.terminate()

    # -- helpers -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"metadata store {self.where} is closed")

    def _failed(self, what: str, e: BaseException) -> S2Error:
        if self._closed:
            return Closed(f"metadata store {self.where} is closed")
        return Unavailable(f"metadata {what} on {self.where} failed: {e!r}")

    async def _read(self, sql: str, args: list[Any]) -> list[Any]:
        async with self._connection() as conn:
            try:
                return await conn.fetch(sql, *args)
            except _DB_ERRORS as e:
                raise self._failed("read", e) from e

    async def _write(self, ops: list[Op]) -> tuple[list[int | None], list[int]]:
        """(previous versions, new versions) of validated `ops`, applied in one transaction."""
        while True:  # each retry follows another writer's create of one of these keys
            async with self._connection() as conn:
                try:
                    return await self._transaction(conn, ops)
                except _CreateRaced:
                    continue
                except _DB_ERRORS as e:
                    raise self._failed("write", e) from e

    async def _transaction(self, conn: asyncpg.Connection, ops: list[Op]
                           ) -> tuple[list[int | None], list[int]]:
        tx = conn.transaction(isolation="read_committed")
        try:
            await tx.start()
            outcome = await _apply(conn, self._sql, ops)
        except Exception:
            with contextlib.suppress(*_DB_ERRORS):  # a lost connection rolls back on its own
                await tx.rollback()
            raise
        try:
            await tx.commit()
        except _DB_ERRORS as e:
            raise Indeterminate(f"metadata commit on {self.where} failed: {e!r}") from e
        return outcome

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = await self._ready()
        try:
            conn = await pool.acquire()
        except _DB_ERRORS as e:
            raise self._failed("connection", e) from e
        try:
            yield conn
        finally:
            # The outcome is decided; a failed reset has already discarded the connection.
            with contextlib.suppress(*_DB_ERRORS):
                await pool.release(conn)

    async def _ready(self) -> asyncpg.Pool:
        self._check_open()
        if self._pool is None:
            async with self._opening:
                self._check_open()
                if self._pool is None:
                    self._pool = await self._open_pool()
        return self._pool

    async def _open_pool(self) -> asyncpg.Pool:
        try:
            pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self.pool_size,
                timeout=self.connect_timeout_s, command_timeout=self.command_timeout_s)
        except ValueError as e:  # the driver's ClientConfigurationError is one too
            raise InvalidArgument(f"metadata URL {self.where}: {e}") from e
        except _DB_ERRORS as e:
            raise Unavailable(f"cannot connect to metadata database {self.where}: {e!r}") from e
        try:
            async with pool.acquire() as conn:
                await self._prepare_table(conn)
        except BaseException as e:
            pool.terminate()
            if isinstance(e, _DB_ERRORS):
                raise Unavailable(f"metadata table setup on {self.where} failed: {e!r}") from e
            raise
        return pool

    async def _prepare_table(self, conn: asyncpg.Connection) -> None:
        """Create the table if absent; refuse a server or table that breaks the contract."""
        encoding = await conn.fetchval("SHOW server_encoding")
        if encoding != "UTF8":
            raise InvalidArgument(f"metadata database {self.where} has encoding {encoding}, "
                                  "not UTF8")
        if await conn.fetchval("SHOW synchronous_commit") == "off":
            raise InvalidArgument(f"metadata database {self.where}: synchronous_commit=off may "
                                  "lose acknowledged commits")
        if await conn.fetchval("SELECT to_regclass($1)", self._sql.table) is None:
            async with conn.transaction():  # concurrent CREATE IF NOT EXISTS can collide
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id(self.table))
                await conn.execute(self._sql.schema)
        collation = await conn.fetchval(_KEY_COLLATION, self._sql.table)
        if collation not in _BYTE_ORDER_COLLATIONS:
            raise InvalidArgument(
                f'metadata table {self.table} on {self.where}: key column collation '
                f'{collation!r}, not "C" (keys must list in byte order)')


async def _apply(conn: asyncpg.Connection, sql: _Statements, ops: list[Op]
                 ) -> tuple[list[int | None], list[int]]:
    """Lock, check and apply validated `ops` inside a transaction.

    Raises VersionMismatch for the first op (in batch order) whose condition fails, as the
    SQLite store does, or _CreateRaced when a key seen absent was created meanwhile.
    """
    rows = await conn.fetch(sql.lock, [op.key for op in ops])
    current = {key: version for key, version in rows}
    previous = [current.get(op.key) for op in ops]
    versions = [next_version(op, prev) for op, prev in zip(ops, previous)]
    for i in sorted(range(len(ops)), key=lambda i: ops[i].key):  # lock order: by key
        op, prev, version = ops[i], previous[i], versions[i]
        if op.kind == "delete":
            if prev is not None:
                status = await conn.execute(sql.delete, op.key)
                assert status == "DELETE 1", (op.key, status)  # locked above: still there
        elif prev is None:
            if await conn.fetchval(sql.insert, op.key, op.value, version) is None:
                raise _CreateRaced(op.key)
        else:
            status = await conn.execute(sql.update, op.key, op.value, version)
            assert status == "UPDATE 1", (op.key, status)  # locked above: still there
    return previous, versions


def _check_pg_key(key: str) -> str:
    """check_key, plus PostgreSQL's limit: text cannot hold NUL."""
    if "\x00" in check_key(key):
        raise InvalidArgument(f"a PostgreSQL metadata key cannot contain NUL: {key!r}")
    return key


def _lock_id(table: str) -> int:
    """The advisory lock that serializes creating `table` (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"s2core.metadata.postgres:{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
