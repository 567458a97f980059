"""The scale-out metadata store on one DynamoDB table, shareable by processes on many hosts.

See docs/decisions/0019-dynamodb-metadata.md for the choices and their limits. In short:

- One table (created on first use if absent: on-demand billing), partition key `pk` and
  sort key `sk`, both strings; every row is an item of partition "kv" with `sk` = the key,
  value `v` (binary) and version `ver` (number) (dynamodb_items.py). DynamoDB orders sort
  keys by UTF-8 bytes, so `list_prefix` is a Query (`begins_with`, paged by
  LastEvaluatedKey) listing in the order SQLite and PostgreSQL do.
- Every read is strongly consistent (ConsistentRead).
- create / put / delete are one conditional PutItem / UpdateItem / DeleteItem; a
  `write_batch` that fits one TransactWriteItems (100 items, 4 MB) is one; a bigger one
  runs the transaction-record protocol of dynamodb_txn.py, as atomic for readers and
  writers as the others. Every write's condition includes "not locked by such a batch";
  whoever meets a lock resolves it (dynamodb_txn.py) and tries again.
- Errors (dynamodb_client.py): refused or failed requests are retried for `retry_s`, then
  raise Unavailable (nothing applied) or, for a write with an ambiguous attempt (5xx,
  timeout, dropped connection), Indeterminate; SettlingMetadataStore (decision 0011)
  settles those by reading back, as for PostgreSQL. A condition that fails after an
  ambiguous attempt is Indeterminate too: the first attempt may have landed.

DynamoDB limits, enforced here: keys are at most 1024 bytes of UTF-8, values at most
MAX_VALUE_BYTES (~194 KiB: a locked row holds its old and its new value in one 400 KB item).
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aioboto3
from botocore.config import Config

from s2core.errors import Closed, Indeterminate, InvalidArgument, S2Error, Unavailable
from s2core.metadata.base import Op, Versioned
from s2core.metadata.dynamodb_client import Cancelled, ConditionFailed, DynamoRequests, error_code
from s2core.metadata.dynamodb_items import (
    DATA,
    MAX_KEY_BYTES,
    check_dynamo_key,
    check_dynamo_value,
    data_key,
    direct_write,
    expression,
    fits_one_transaction,
    num,
    parse_row,
)
from s2core.metadata.dynamodb_txn import Batch, Context, Locks, Waiter, recover
from s2core.metadata.rules import check_ops, check_value, next_version, prefix_end

log = logging.getLogger(__name__)

SCHEME = "dynamodb"
# URL query parameters (all of the constructor's options but clock and rng).
STORE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "region": str, "endpoint_url": str, "aws_access_key_id": str,
    "aws_secret_access_key": str, "aws_session_token": str,
    "create_table": lambda s: {"true": True, "false": False}[s.lower()],
    "txn_timeout_s": float, "lock_wait_s": float, "retry_s": float,
    "connect_timeout_s": float, "read_timeout_s": float, "parallelism": int,
    "max_pool_connections": int}
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_KEY_SCHEMA = {("pk", "HASH"), ("sk", "RANGE")}
_TABLE_ACTIVE_WAIT_S = 120.0


class DynamoMetadataStore:
    """MetadataStore on one DynamoDB table (see the module doc); nothing is sent until the
    first operation, which creates the table if absent (`create_table`) and finishes
    transactions that crashed owners left behind (`recover`).

    Options: `txn_timeout_s`, how long a big batch's owner may stay silent before others
    abort it; `lock_wait_s`, how long a write waits for a live batch's lock before
    Unavailable; `retry_s`, how long failed requests are retried (below txn_timeout_s: an
    owner retrying a request does not heartbeat); `parallelism`, requests in flight per
    batch. Credentials default to botocore's usual chain. `clock` (wall time, seconds)
    dates heartbeats, which other processes compare with theirs.
    """

    def __init__(self, table: str, *, region: str | None = None,
                 endpoint_url: str | None = None, aws_access_key_id: str | None = None,
                 aws_secret_access_key: str | None = None, aws_session_token: str | None = None,
                 create_table: bool = True, txn_timeout_s: float = 10.0,
                 lock_wait_s: float = 30.0, retry_s: float = 5.0,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 10.0,
                 parallelism: int = 4, max_pool_connections: int = 16,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
            raise InvalidArgument(f"DynamoDB table name must match {_TABLE_NAME.pattern}, "
                                  f"got {table!r}")
        if min(txn_timeout_s, lock_wait_s, retry_s, connect_timeout_s, read_timeout_s) <= 0 \
                or parallelism < 1 or max_pool_connections < 1:
            raise InvalidArgument("the DynamoDB store's timeouts and sizes must be positive")
        if retry_s >= txn_timeout_s:  # an owner retrying a request cannot heartbeat
            raise InvalidArgument("retry_s must be below txn_timeout_s")
        self.table = table
        self.where = f"{SCHEME}://{table}" + (f" at {endpoint_url}" if endpoint_url else "")
        self.create_table = create_table
        self._endpoint_url = endpoint_url
        self._session = aioboto3.Session(
            aws_access_key_id=aws_access_key_id, aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token, region_name=region)
        self._config = Config(connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
                              retries={"mode": "standard", "total_max_attempts": 1},
                              max_pool_connections=max_pool_connections)
        self._client: Any = None
        self._client_cm: Any = None
        self._prepared = False
        self._opening = asyncio.Lock()
        self._closed = False
        self.requests = DynamoRequests(table, lambda: self._client, retry_s=retry_s,
                                       rng=rng or random.Random(), closed=lambda: self._closed)
        self.txn = Context(self.requests, clock_ms=lambda: int(clock() * 1000),
                           new_id=lambda: uuid.uuid4().hex, txn_timeout_s=txn_timeout_s,
                           lock_wait_s=lock_wait_s, parallelism=parallelism)
        self.locks = Locks(self.txn)

    @classmethod
    def from_url(cls, url: str, **opts: Any) -> DynamoMetadataStore:
        """A store from `dynamodb://TABLE?region=...&endpoint_url=...` (options win)."""
        parts = urlsplit(url)
        if parts.scheme != SCHEME or not parts.netloc or parts.path not in ("", "/"):
            raise InvalidArgument("DynamoDB metadata URL is dynamodb://TABLE?...: got "
                                  f"{parts.scheme}://{parts.netloc}{parts.path}")
        own: dict[str, Any] = {}
        for name, raw in parse_qsl(parts.query, keep_blank_values=True):
            if name not in STORE_OPTIONS:
                raise InvalidArgument(f"unknown DynamoDB metadata URL option {name!r}")
            try:
                own[name] = STORE_OPTIONS[name](raw)
            except (ValueError, KeyError):  # (credentials are str: never shown here)
                raise InvalidArgument(f"DynamoDB metadata URL option {name}={raw!r}") from None
        own.update(opts)
        return cls(unquote(parts.netloc), **own)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, key: str) -> Versioned | None:
        """The value and version, or None if absent."""
        check_dynamo_key(key)
        await self._ready()
        view, _ = await self.locks.view(key, await self.locks.read_row(key))
        return view

    async def list_prefix(
        self, prefix: str, *, start_after: str = "", limit: int | None = None
    ) -> list[tuple[str, Versioned]]:
        """Keys with `prefix`, ascending, strictly after `start_after`, at most `limit`.

        Each row is as its key was at some moment of the call (as a get would answer),
        but the rows are not one snapshot: a batch that commits while the listing runs
        may show in some of its rows and not yet in others (DynamoDB's Query gives no
        more against its own transactions)."""
        await self._ready()
        if limit is not None and limit < 0:
            raise InvalidArgument(f"negative limit {limit}")
        for text in (prefix, start_after):
            try:
                text.encode()
            except UnicodeEncodeError:
                raise InvalidArgument(f"not valid UTF-8: {text!r}") from None
        end = prefix_end(prefix)
        if limit == 0 or len(prefix.encode()) > MAX_KEY_BYTES or (
                end is not None and start_after >= end):
            return []
        query = self._scan(prefix, start_after)
        out: list[tuple[str, Versioned]] = []
        heads: dict[str, Any] = {}
        while True:
            if limit is not None:
                query["Limit"] = min(limit - len(out), 1000)
            page = await self.requests.call("query", write=False, **query)
            for item in page.get("Items", ()):
                row = parse_row(item)
                assert row is not None
                if row.key <= start_after:
                    continue
                view, _ = await self.locks.view(row.key, row, heads)
                if view is not None:
                    out.append((row.key, view))
                    if len(out) == limit:
                        return out
            if not page.get("LastEvaluatedKey"):
                return out
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            # a pending transaction may commit before the next page is read
            heads = {t: h for t, h in heads.items() if h is None or h.state != "pending"}

    def _scan(self, prefix: str, start_after: str) -> dict[str, Any]:
        query: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        if prefix:
            query |= expression(condition="#pk = :pk AND begins_with(#sk, :prefix)",
                                pk={"S": DATA}, prefix={"S": prefix})
        else:
            query |= expression(condition="#pk = :pk", pk={"S": DATA})
        query["KeyConditionExpression"] = query.pop("ConditionExpression")
        if start_after >= prefix and start_after:
            # Rows after start_after (cut to the longest key DynamoDB takes; the rows
            # between the cut and start_after are skipped above).
            cut = start_after
            while len(cut.encode()) > MAX_KEY_BYTES:
                cut = cut[:-1]
            query["ExclusiveStartKey"] = data_key(cut)
        return query

    # -- writes ----------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> int:
        """Create-if-absent; returns 1. VersionMismatch if present."""
        op = Op("put", check_dynamo_key(key), check_dynamo_value(check_value(value)), None)
        return await self._single(op)

    async def put(self, key: str, value: bytes, expected_version: int) -> int:
        """Replace iff at `expected_version` (0: unconditionally); returns the new version."""
        op = self._checked([Op("put", key, value, expected_version)])[0]
        return await self._single(op)

    async def delete(self, key: str, expected_version: int | None = None) -> bool:
        """Delete (iff at `expected_version`, if given); returns whether it existed."""
        op = self._checked([Op("delete", key, None, expected_version)])[0]
        return bool(await self._single(op))

    async def write_batch(self, ops: list[Op]) -> list[int]:
        """Apply `ops` atomically, or raise VersionMismatch and apply none."""
        ops = self._checked(list(ops))
        await self._ready()
        if not ops:
            return []
        if fits_one_transaction(ops):
            return await self._small_batch(ops)
        return await Batch(self.txn, self.locks, ops).run()

    async def recover(self) -> int:
        """Finish big batches whose owners went silent (run on first use, too)."""
        await self._ready()
        return await recover(self.txn, self.locks)

    async def close(self) -> None:
        """Close the client; further operations raise Closed."""
        if self._closed:
            return
        self._closed = True
        async with self._opening:
            cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    # -- one op, one batch -----------------------------------------------------------------

    async def _single(self, op: Op) -> int:
        """The new version of a put; for a delete, 1 if the row existed, else 0."""
        await self._ready()
        waiter = Waiter(self.txn)
        while True:
            try:
                return await self._write_one(op)
            except ConditionFailed as e:
                if e.ambiguous:
                    raise Indeterminate(f"metadata write of {op.key!r} on {self.where}: "
                                        "condition failed after an ambiguous attempt") from e
            row = await self.locks.read_row(op.key)
            view, lock = await self.locks.view(op.key, row)
            next_version(op, None if view is None else view.version)  # VersionMismatch
            if lock is not None and row is not None:
                await self.locks.clear(op.key, row, lock, waiter)

    async def _write_one(self, op: Op) -> int:
        if op.kind == "put" and op.expected_version == 0:
            resp = await self.requests.write("Update", {"Key": data_key(op.key), **expression(
                "SET #v = :v, #ver = if_not_exists(#ver, :zero) + :one",
                "attribute_not_exists(#lk)", v={"B": op.value}, zero=num(0), one=num(1))},
                ReturnValues="UPDATED_NEW")
            return int(resp["Attributes"]["ver"]["N"])
        kind, fields = direct_write(op, None)
        if op.kind == "delete":
            resp = await self.requests.write(kind, fields, ReturnValues="ALL_OLD")
            return int("ver" in resp.get("Attributes", {}))
        await self.requests.write(kind, fields)
        return next_version(op, op.expected_version)

    async def _small_batch(self, ops: list[Op]) -> list[int]:
        """A batch in one TransactWriteItems. Unconditional puts are made conditional on
        the version read first, so that the versions returned are known."""
        unconditional = [op.key for op in ops if op.kind == "put" and op.expected_version == 0]
        seen: dict[str, int | None] = {}
        if unconditional:
            rows = await self.locks.read_rows(unconditional)
            for key in unconditional:
                view, _ = await self.locks.view(key, rows.get(key))
                seen[key] = None if view is None else view.version
        waiter = Waiter(self.txn)
        while True:
            try:
                await self.requests.transact([direct_write(op, seen.get(op.key)) for op in ops])
                return [next_version(op, seen.get(op.key, op.expected_version)) for op in ops]
            except Cancelled as c:
                if c.ambiguous:
                    raise Indeterminate(f"metadata batch on {self.where}: conditions failed "
                                        "after an ambiguous attempt") from c
            rows = await self.locks.read_rows([op.key for op in ops])
            locked = []
            for op in ops:  # the first op (in batch order) whose condition fails raises
                row = rows.get(op.key)
                view, lock = await self.locks.view(op.key, row)
                current = None if view is None else view.version
                if op.key in seen:
                    seen[op.key] = current
                else:
                    next_version(op, current)
                if lock is not None and row is not None:
                    locked.append((op.key, row, lock))
            for key, row, lock in locked:
                await self.locks.clear(key, row, lock, waiter)

    def _checked(self, ops: list[Op]) -> list[Op]:
        out = []
        for op in check_ops(ops):
            check_dynamo_key(op.key)
            value = None if op.kind == "delete" else check_dynamo_value(bytes(op.value))
            out.append(Op(op.kind, op.key, value, op.expected_version))
        return out

    # -- the table -------------------------------------------------------------------------

    async def _ready(self) -> None:
        if self._closed:
            raise Closed(f"metadata store {self.where} is closed")
        if self._prepared:
            return
        async with self._opening:
            if self._closed:
                raise Closed(f"metadata store {self.where} is closed")
            if self._prepared:
                return
            cm = self._session.client("dynamodb", endpoint_url=self._endpoint_url,
                                      config=self._config)
            self._client = await cm.__aenter__()
            try:
                await self._prepare_table()
            except BaseException:
                self._client = None
                await cm.__aexit__(None, None, None)
                raise
            self._client_cm = cm
            self._prepared = True
            try:
                if done := await recover(self.txn, self.locks):
                    log.warning("finished %d metadata transactions left by crashed owners "
                                "on %s", done, self.where)
            except S2Error as e:
                log.warning("finishing abandoned metadata transactions on %s failed: %r",
                            self.where, e)

    async def _prepare_table(self) -> None:
        """Create the table if absent and allowed; refuse one with another key schema."""
        try:
            table = await self._describe()
        except Unavailable as e:
            if error_code(e) != "ResourceNotFoundException" or not self.create_table:
                raise
            try:
                await self.requests.call(
                    "create_table", write=True, TableName=self.table,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                               {"AttributeName": "sk", "KeyType": "RANGE"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                          {"AttributeName": "sk", "AttributeType": "S"}])
            except (Unavailable, Indeterminate) as created:
                if error_code(created) != "ResourceInUseException" and not isinstance(
                        created, Indeterminate):
                    raise  # (in use: another store is creating it; wait for it below)
            table = await self._describe(created=True)
        deadline = time.monotonic() + _TABLE_ACTIVE_WAIT_S
        while table.get("TableStatus") != "ACTIVE":
            if time.monotonic() > deadline:
                raise Unavailable(f"DynamoDB table {self.where} is {table.get('TableStatus')}")
            await asyncio.sleep(0.5)
            table = await self._describe()
        schema = {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]}
        types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        if schema != _KEY_SCHEMA or types.get("pk") != "S" or types.get("sk") != "S":
            raise InvalidArgument(f"DynamoDB table {self.where} has key schema {schema} "
                                  f"{types}, not pk (S, HASH) + sk (S, RANGE)")

    async def _describe(self, created: bool = False) -> dict[str, Any]:
        for _ in range(20):  # a table just created may not be visible yet
            try:
                resp = await self.requests.call("describe_table", write=False,
                                                TableName=self.table)
                return resp["Table"]
            except Unavailable as e:
                if error_code(e) != "ResourceNotFoundException" or not created:
                    raise
            await asyncio.sleep(0.5)
        raise Unavailable(f"DynamoDB table {self.where} does not appear")
