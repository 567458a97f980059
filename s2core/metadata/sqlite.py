"""The embedded metadata store: one SQLite table in WAL mode, safe for several processes.

See docs/decisions/0003-sqlite-metadata.md for the choices and what is durable when. In
short:

- Reads run synchronously on the event loop thread: a primary-key lookup is ~10 µs, less
  than a hop to a thread and back, and WAL readers never wait for writers.
- Writes on the writer thread go through a group commit: every write submitted while a
  transaction is being committed joins the next one, each in its own SAVEPOINT so one
  failed condition does not fail its neighbours. One transaction = one WAL sync, whatever
  the number of writes. Inline writes commit one by one (no sync to share).
- Each transaction starts with BEGIN IMMEDIATE, which takes SQLite's write lock first, so
  a check-and-set (read the version, write the new one) is atomic across processes too.
- synchronous=FULL (the default) syncs the WAL at every commit: an acknowledged write
  survives power loss. NORMAL syncs only at checkpoints: a commit survives a crash of any
  process, but a power loss or OS crash may roll back the last commits (never corrupting).
- With FULL, commits run on a dedicated writer thread (a sync blocks for 0.1-10 ms); with
  NORMAL they run on the loop thread, where a commit takes tens of µs. `write_thread`
  overrides this; use a thread whenever other processes write the same file, since
  waiting for their lock (up to `busy_timeout_ms`) would otherwise block the loop.
- Big batches (an offload's catalog rows and checkpoints: 20,000 rows take 0.2-0.4 s of
  CPU) run alone, whatever the mode, on a second thread at background CPU priority
  (s2core.background, decision 0012). The connection is the same and writes still go one
  transaction at a time, in order; the batch only takes the cores nothing else wants, so
  it no longer delays the WAL sync helper's and the loop's wake-ups.

Not for network filesystems: WAL mode needs shared memory between the processes.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from s2core.background import lower_this_thread
from s2core.errors import Closed, Indeterminate, InvalidArgument, S2Error, Unavailable
from s2core.metadata.base import Op, Versioned, VersionMismatch
from s2core.metadata.rules import check_key, check_ops, check_value, next_version, prefix_end

SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")
MAX_GROUP = 1000  # writes per transaction; bounds the time a commit holds the write lock

_SCHEMA = """CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID"""

_WriteFn = Callable[[sqlite3.Connection], Any]


class SqliteMetadataStore:
    """MetadataStore on a SQLite file (WAL mode, one `kv` table), shareable by processes."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL",
                 busy_timeout_ms: int = 10_000, write_thread: bool | None = None) -> None:
        self.path = os.fspath(path)
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise InvalidArgument(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        if self.path == ":memory:" or self.path.startswith("file:"):
            raise InvalidArgument("SqliteMetadataStore needs a file path")
        self.synchronous = synchronous
        try:
            self._writer = _connect(self.path, synchronous, busy_timeout_ms)
            self._writer.execute(_SCHEMA)
            self._reader = _connect(self.path, synchronous, busy_timeout_ms)
        except sqlite3.Error as e:
            raise Unavailable(f"cannot open metadata database {self.path}: {e}") from e
        if write_thread is None:
            write_thread = synchronous != "NORMAL"
        self._pool = ThreadPoolExecutor(1, "metadata-sqlite") if write_thread else None
        self._bulk_pool: ThreadPoolExecutor | None = None  # big batches (started on demand)
        # (write, its future, whether it is a big batch)
        self._pending: list[tuple[_WriteFn, asyncio.Future[Any], bool]] = []
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    # -- reads: synchronous on the loop thread ---------------------------------------------

    async def get(self, key: str) -> Versioned | None:
        """The value and version, or None if absent."""
        self._check_open()
        rows = self._read("SELECT value, version FROM kv WHERE key = ?", (check_key(key),))
        return Versioned(rows[0][0], rows[0][1]) if rows else None

    async def list_prefix(
        self, prefix: str, *, start_after: str = "", limit: int | None = None
    ) -> list[tuple[str, Versioned]]:
        """Keys with `prefix`, ascending, strictly after `start_after`, at most `limit`.

        A key-range scan of the primary key, so '%' and '_' in keys are plain characters.
        """
        self._check_open()
        if limit is not None and limit < 0:
            raise InvalidArgument(f"negative limit {limit}")
        if start_after >= prefix:
            sql, args = "SELECT key, value, version FROM kv WHERE key > ?", [start_after]
        else:
            sql, args = "SELECT key, value, version FROM kv WHERE key >= ?", [prefix]
        end = prefix_end(prefix)
        if end is not None:
            sql += " AND key < ?"
            args.append(end)
        sql += " ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [(k, Versioned(v, ver)) for k, v, ver in self._read(sql, args)]

    # -- writes: group-committed -----------------------------------------------------------

    async def create(self, key: str, value: bytes) -> int:
        """Create-if-absent; returns 1. VersionMismatch if present."""
        op = Op("put", check_key(key), check_value(value), None)
        return await self._write(lambda conn: _apply(conn, op)[1])

    async def put(self, key: str, value: bytes, expected_version: int) -> int:
        """Replace iff at `expected_version` (0: unconditionally); returns the new version."""
        op = check_ops([Op("put", key, check_value(value), expected_version)])[0]
        return await self._write(lambda conn: _apply(conn, op)[1])

    async def delete(self, key: str, expected_version: int | None = None) -> bool:
        """Delete (iff at `expected_version`, if given); returns whether it existed."""
        op = check_ops([Op("delete", key, None, expected_version)])[0]
        return await self._write(lambda conn: _apply(conn, op)[0] is not None)

    async def write_batch(self, ops: list[Op]) -> list[int]:
        """Apply `ops` atomically (one SAVEPOINT), or raise VersionMismatch and apply none."""
        # values are copied now (a caller may reuse a buffer); checks and SQL run on the
        # writer thread, except for big text batches, prepared on the loop in slices
        # (see _BIG_BATCH): a batch of 20,000 rows must not stall the event loop
        ops = [op if op.value is None or type(op.value) is bytes else
               Op(op.kind, op.key, bytes(op.value), op.expected_version) for op in ops]
        bulk = len(ops) >= _BIG_BATCH
        if bulk:
            pieces = await _prepare_big(ops)
            if pieces is not None:
                return await self._write(lambda conn: _apply_big(conn, pieces), bulk=True)
        return await self._write(lambda conn: _apply_batch(conn, check_ops(ops)), bulk=bulk)

    async def close(self) -> None:
        """Finish pending writes, then close both connections and the writer thread."""
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            await asyncio.wait([self._committer])
        self._reader.close()
        self._writer.close()
        for pool in (self._pool, self._bulk_pool):
            if pool is not None:
                pool.shutdown(wait=True)

    # -- helpers -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"metadata store {self.path} is closed")

    def _read(self, sql: str, args: Any) -> list[Any]:
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise Unavailable(f"metadata read failed: {e}") from e

    async def _write(self, fn: _WriteFn, bulk: bool = False) -> Any:
        self._check_open()
        if self._pool is None and not bulk and self._committer is None:
            # inline: a commit without a sync costs less than queueing
            outcome = _run_group(self._writer, [fn])[0]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future, bulk))
        if self._committer is None:
            self._committer = asyncio.get_running_loop().create_task(self._commit_pending())
        return await future

    def _bulk_executor(self) -> ThreadPoolExecutor:
        if self._bulk_pool is None:
            self._bulk_pool = ThreadPoolExecutor(1, "metadata-sqlite-bulk",
                                                 initializer=lower_this_thread)
        return self._bulk_pool

    async def _commit_pending(self) -> None:
        """Commit queued writes in groups until none are left (owned and awaited by close):
        a big batch alone on the background thread, the others together on the writer
        thread (or inline, without one)."""
        batch: list[tuple[_WriteFn, asyncio.Future[Any], bool]] = []
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self._pending[0][2]:
                    n = 1
                else:
                    n = next((i for i, w in enumerate(self._pending[:MAX_GROUP]) if w[2]),
                             min(MAX_GROUP, len(self._pending)))
                batch, self._pending = self._pending[:n], self._pending[n:]
                fns = [fn for fn, _, _ in batch]
                pool = self._bulk_executor() if batch[0][2] else self._pool
                try:
                    if pool is None:  # inline commits
                        outcomes = _run_group(self._writer, fns)
                    else:
                        outcomes = await loop.run_in_executor(
                            pool, _run_group, self._writer, fns)
                except S2Error as e:  # nothing committed (Unavailable), or Indeterminate
                    outcomes = [e] * len(batch)
                for (_, future, _), outcome in zip(batch, outcomes):
                    if future.done():
                        continue  # its caller was cancelled; nobody waits for the outcome
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                batch = []
        except BaseException as e:
            # Cancelled (loop shutdown) or a bug: fail every waiter, then propagate.
            in_flight = e if isinstance(e, Exception) else Indeterminate(
                "metadata commit was interrupted")
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(in_flight)
            for _, future, _ in self._pending:
                if not future.done():
                    future.set_exception(Unavailable("metadata commit was interrupted"))
            self._pending = []
            raise
        finally:
            self._committer = None


def _connect(path: str, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
    # check_same_thread=False: the writer is created here but used on the writer thread;
    # each connection is still used by one thread at a time.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        conn.close()
        raise sqlite3.OperationalError(f"cannot enable WAL mode (got {mode!r})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def _run_group(conn: sqlite3.Connection, fns: list[_WriteFn]) -> list[Any]:
    """Run each write in its own savepoint inside one transaction; commit once.

    Returns each write's result, or the S2Error (e.g. VersionMismatch) that undid it.
    Raises Unavailable if nothing was committed, Indeterminate if the commit itself failed
    (after a failed WAL sync, the transaction may still be recovered on restart).
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise Unavailable(f"metadata write lock: {e}") from e
    outcomes: list[Any] = []
    try:
        for fn in fns:
            conn.execute("SAVEPOINT op")
            try:
                outcomes.append(fn(conn))
            except S2Error as e:
                conn.execute("ROLLBACK TO op")
                outcomes.append(e)
            conn.execute("RELEASE op")
    except sqlite3.Error as e:
        _rollback(conn)
        raise Unavailable(f"metadata write failed: {e}") from e
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        _rollback(conn)
        raise Indeterminate(f"metadata commit failed: {e}") from e
    return outcomes


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back on its own when it cannot continue


def _version(conn: sqlite3.Connection, key: str) -> int | None:
    rows = conn.execute("SELECT version FROM kv WHERE key = ?", (key,)).fetchall()
    return rows[0][0] if rows else None


_PIECE = 1000  # rows per statement of a big batch


def _apply_batch(conn: sqlite3.Connection, ops: list[Op]) -> list[int]:
    """Apply validated ops, all or none (the caller's savepoint): their new versions.

    An offload publishes a catalog row and a checkpoint per stream: 20,000 ops for 10,000
    streams. Python's sqlite3 hands the GIL back around every row it steps, and with a
    busy event loop each hand-back costs a wait of up to a switch interval, so rows go
    in and come out `_PIECE` at a time as one JSON parameter or result: one step per
    statement, not one per row (`_rows_to_text` says when the values allow it)."""
    keys = [op.key for op in ops]
    current: dict[str, int] = {}
    for i in range(0, len(keys), _PIECE):
        (found,) = conn.execute(
            "SELECT json_group_array(json_array(key, version)) FROM kv "
            "WHERE key IN (SELECT value FROM json_each(?))",
            (json.dumps(keys[i:i + _PIECE]),)).fetchone()
        current.update(json.loads(found))
    versions, upserts, deletes = [], [], []
    for op in ops:
        cur = current.get(op.key)
        version = next_version(op, cur)  # VersionMismatch before anything is written
        versions.append(version)
        if op.kind == "delete":
            if cur is not None:
                deletes.append((op.key,))
        else:
            upserts.append((op.key, op.value, version))
    if deletes:
        conn.executemany("DELETE FROM kv WHERE key = ?", deletes)
    for i in range(0, len(upserts), _PIECE):
        piece = upserts[i:i + _PIECE]
        text = _rows_to_text(piece)
        if text is not None:
            conn.execute(
                "INSERT INTO kv (key, value, version) SELECT json_extract(value, '$[0]'), "
                "CAST(json_extract(value, '$[1]') AS BLOB), json_extract(value, '$[2]') "
                "FROM json_each(?) WHERE true "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "version = excluded.version", (text,))
        else:
            conn.executemany(
                "INSERT INTO kv (key, value, version) VALUES (?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value, version = excluded.version", piece)
    return versions


# Batches of at least this many ops, all puts of text values (an offload's catalog rows
# and checkpoints), are prepared on the loop in slices and applied by SQL alone: the
# writer thread then runs no Python per row. Python there holds the GIL, and each time
# the busy loop gives the GIL up (every system call) it waits up to a switch interval to
# get it back: appends that started during a 20,000-row batch had p50 2.2-2.7 ms against
# 0.9 ms outside it.
_BIG_BATCH = 64
_SLICE = 128  # ops prepared between two yields to the loop (about 0.2 ms)

# First op of a piece (a JSON array of [key, text, expected]) whose condition fails:
# expected null = create-if-absent, 0 = unconditional, n = must be at n.
_BIG_CHECK = (
    "SELECT j.value->>0, j.value->>2, kv.version FROM json_each(?) j "
    "LEFT JOIN kv ON kv.key = j.value->>0 WHERE CASE "
    "WHEN j.value->>2 IS NULL THEN kv.version IS NOT NULL "
    "WHEN j.value->>2 = 0 THEN 0 "
    "ELSE kv.version IS NOT j.value->>2 END ORDER BY j.key LIMIT 1")
_BIG_VERSIONS = (
    "SELECT json_group_array(v) FROM (SELECT COALESCE(kv.version, 0) + 1 AS v "
    "FROM json_each(?) j LEFT JOIN kv ON kv.key = j.value->>0 ORDER BY j.key)")
_BIG_UPSERT = (
    "INSERT INTO kv (key, value, version) SELECT j.value->>0, CAST(j.value->>1 AS BLOB), "
    "COALESCE(kv.version, 0) + 1 FROM json_each(?) j LEFT JOIN kv ON kv.key = j.value->>0 "
    "WHERE true ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
    "version = excluded.version")


async def _prepare_big(ops: list[Op]) -> list[tuple[int, str]] | None:
    """Validate `ops` as check_ops does and encode them, `_PIECE` at a time, as JSON
    arrays of [key, text, expected], yielding to the loop every `_SLICE` ops. None if the
    batch is not all puts of UTF-8 text without NUL (the writer thread applies it then)."""
    seen: set[str] = set()
    rows: list = []
    for i in range(0, len(ops), _SLICE):
        if i:
            await asyncio.sleep(0)
        part = check_ops(ops[i:i + _SLICE])
        for op in part:
            if op.kind != "put":
                return None
            if op.key in seen:
                raise InvalidArgument(f"key {op.key!r} appears twice in one batch")
            seen.add(op.key)
            text = _as_text(op.value)
            if text is None:
                return None
            rows.append((op.key, text, op.expected_version))
    pieces = []
    for i in range(0, len(rows), _PIECE):
        piece = rows[i:i + _PIECE]
        texts = []
        for j in range(0, len(piece), _SLICE):  # (1,000 rows take 0.6 ms to encode)
            await asyncio.sleep(0)
            texts.append(json.dumps(piece[j:j + _SLICE])[1:-1])
        pieces.append((len(piece), f"[{', '.join(texts)}]"))
    return pieces


def _apply_big(conn: sqlite3.Connection, pieces: list[tuple[int, str]]) -> list[int]:
    """Apply prepared pieces, all or none (the caller's savepoint): their new versions."""
    versions: list[int] = []
    for n, text in pieces:
        bad = conn.execute(_BIG_CHECK, (text,)).fetchone()
        if bad is not None:
            raise VersionMismatch(*bad)
        (got,) = conn.execute(_BIG_VERSIONS, (text,)).fetchone()
        got = json.loads(got)
        if len(got) != n:
            raise AssertionError(f"a batch piece of {n} rows gave {len(got)} versions")
        conn.execute(_BIG_UPSERT, (text,))
        versions += got
    return versions


def _rows_to_text(rows: list[tuple[str, bytes, int]]) -> str | None:
    """The rows as one JSON array if every value is UTF-8 text without NUL (SQLite's
    CAST of the extracted text back to a BLOB gives the same bytes); else None."""
    if len(rows) < 16:
        return None  # a few rows: executemany is as cheap
    out = []
    for k, v, n in rows:
        text = _as_text(v)
        if text is None:
            return None
        out.append((k, text, n))
    return json.dumps(out)


def _as_text(value: bytes) -> str | None:
    """`value` as text that SQLite's CAST back to a BLOB restores byte for byte (UTF-8
    without NUL); None if it is not."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _apply(conn: sqlite3.Connection, op: Op) -> tuple[int | None, int]:
    """Apply one validated op if its condition holds: (previous version, new version)."""
    current = _version(conn, op.key)
    version = next_version(op, current)
    if op.kind == "delete":
        if current is not None:
            conn.execute("DELETE FROM kv WHERE key = ?", (op.key,))
    elif current is None:
        conn.execute("INSERT INTO kv (key, value, version) VALUES (?, ?, ?)",
                     (op.key, op.value, version))
    else:
        conn.execute("UPDATE kv SET value = ?, version = ? WHERE key = ?",
                     (op.value, version, op.key))
    return current, version
