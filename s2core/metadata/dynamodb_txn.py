"""Atomic write batches of any size on DynamoDB: a transaction record and row locks.

TransactWriteItems holds at most 100 items and 4 MB; an offload publishes thousands of
rows in one `write_batch`. A bigger batch runs this protocol (docs/decisions/0019):

1. Read every row (consistently); a failing condition raises VersionMismatch at once.
2. Write the transaction record: head `h/<txid>` (pending, heartbeat) and parts listing
   the keys.
3. Lock the rows in key order, up to 100 a TransactWriteItems: each lock is conditional on
   the row being unlocked at the version read, and stores the intent (new value and
   version) beside the old value. A changed row fails the batch (locks released, record
   removed, VersionMismatch); a row locked by another transaction is resolved (below).
4. Commit: the head goes pending -> committed, conditionally. This is the commit point.
5. Apply each row (intent -> value, lock removed, conditional on the lock), then delete
   the record. After the commit nothing can undo the batch: a failure here leaves the
   rows to whoever meets them, and the record to `recover`.

Anyone who meets a locked row resolves it from the head: committed -> the intent is the
row's value (a writer rolls it forward first); pending -> the old value is (a reader
answers with it; a writer waits, and may abort the transaction once its owner has not
heartbeated for `txn_timeout_s`: pending -> aborted, conditional on that heartbeat);
aborted -> the old value (a writer releases the lock); no head -> re-read the row: a lock
that outlives its head belongs to a transaction that was aborted and cleaned up while its
owner was still locking, since a committed head is deleted only after its rows are applied.
Locks are taken in key order and a waiting owner holds only smaller keys, so batches
never wait for each other in a cycle.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from s2core.errors import Indeterminate, S2Error, Unavailable
from s2core.metadata.base import Op, Versioned, VersionMismatch
from s2core.metadata.dynamodb_client import Cancelled, ConditionFailed, DynamoRequests
from s2core.metadata.dynamodb_items import (
    ABORTED,
    COMMITTED,
    PENDING,
    TXN,
    Head,
    Row,
    data_key,
    expression,
    head_item,
    head_key,
    key_parts,
    lock_write,
    num,
    parse_head,
    parse_row,
    part_item,
    part_key,
    part_keys,
    release,
    roll_forward,
    transaction_groups,
    write_groups,
)
from s2core.metadata.rules import next_version

log = logging.getLogger(__name__)

ATTEMPTS = 3  # a batch aborted by others (its owner looked dead) is run again this often


class AbortedByOthers(Exception):
    """Another process aborted this transaction: its heartbeat looked stale."""


@dataclass
class Context:
    """What the protocol needs from its store."""

    requests: DynamoRequests
    clock_ms: Callable[[], int]  # wall clock, shared by processes (heartbeat ages)
    new_id: Callable[[], str]
    txn_timeout_s: float
    lock_wait_s: float
    parallelism: int
    # Called with (step, txid) between protocol steps, and awaited if it returns an
    # awaitable; tests raise from it to play a process killed there, or look at the
    # store from it ("recorded", "locked-group", "locked", "committed", "applied-group",
    # "applied").
    step_hook: Callable[[str, str], Awaitable[None] | None] | None = None
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    async def step(self, name: str, txid: str) -> None:
        if self.step_hook is not None:
            done = self.step_hook(name, txid)
            if done is not None:
                await done


@dataclass(frozen=True, slots=True)
class RowLock:
    """A row's lock as resolved: its transaction and that transaction's state."""

    txid: str
    state: str  # PENDING, COMMITTED, ABORTED, or "gone" (head deleted: never committed)
    head: Head | None


class Waiter:
    """Backoff while a row stays locked by a live transaction; Unavailable after
    `lock_wait_s`. `on_wait` runs at each wait (an owner heartbeats there)."""

    def __init__(self, ctx: Context, on_wait: Callable[[], Awaitable[None]] | None = None
                 ) -> None:
        self.deadline = time.monotonic() + ctx.lock_wait_s
        self.delay = 0.005
        self.on_wait = on_wait

    async def wait(self, key: str, txid: str) -> None:
        if time.monotonic() >= self.deadline:
            raise Unavailable(f"metadata key {key!r} stays locked by transaction {txid} "
                              "(in progress)")
        if self.on_wait is not None:
            await self.on_wait()
        await asyncio.sleep(self.delay)
        self.delay = min(2 * self.delay, 0.2)


async def all_of(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run `coroutines` in a task group; the first failure is raised as itself (callers
    see this store's errors, not an ExceptionGroup)."""
    try:
        async with asyncio.TaskGroup() as tg:
            for coroutine in coroutines:
                tg.create_task(coroutine)
    except ExceptionGroup as group:
        raise group.exceptions[0] from group


class Locks:
    """Reading through and clearing other transactions' row locks (see the module doc)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.req = ctx.requests

    async def read_rows(self, keys: list[str]) -> dict[str, Row]:
        """The rows of `keys` that exist, consistently read, `parallelism` requests at once."""
        chunks = [keys[i:i + 1000] for i in range(0, len(keys), 1000)]
        gate = asyncio.Semaphore(self.ctx.parallelism)
        rows: dict[str, Row] = {}

        async def read(chunk: list[str]) -> None:
            async with gate:
                for item in await self.req.batch_get([data_key(k) for k in chunk]):
                    row = parse_row(item)
                    assert row is not None
                    rows[row.key] = row

        await all_of([read(chunk) for chunk in chunks])
        return rows

    async def read_row(self, key: str) -> Row | None:
        return parse_row(await self.req.get(data_key(key)))

    async def head(self, txid: str, heads: dict[str, Head | None] | None = None
                   ) -> Head | None:
        """The head of `txid`; `heads` caches them for one call (a committed or aborted
        state is final; a pending one was true when read, which is all a view needs)."""
        if heads is not None and txid in heads:
            return heads[txid]
        head = parse_head(await self.req.get(head_key(txid)))
        if heads is not None:
            heads[txid] = head
        return head

    async def view(self, key: str, row: Row | None,
                   heads: dict[str, Head | None] | None = None
                   ) -> tuple[Versioned | None, RowLock | None]:
        """The value of `key` given its `row`, and the row's lock, resolved."""
        while True:
            if row is None or row.lock is None:
                return (None if row is None else row.committed()), None
            head = await self.head(row.lock, heads)
            if head is None:
                again = await self.read_row(key)
                if again is not None and again.lock == row.lock:
                    return row.committed(), RowLock(row.lock, "gone", None)
                row = again
                continue
            if head.state == COMMITTED:
                return row.intended(), RowLock(row.lock, COMMITTED, head)
            return row.committed(), RowLock(row.lock, head.state, head)

    async def clear(self, key: str, row: Row, lock: RowLock, waiter: Waiter) -> None:
        """Make progress on `row`'s lock: roll it forward, release it, abort its stale
        transaction, or wait. The caller reads the row again afterwards."""
        if lock.state == COMMITTED:
            await self.settle(lock.txid, [roll_forward(key, lock.txid, row.new_value,
                                                       row.new_version or 0)])
        elif lock.state in (ABORTED, "gone"):
            await self.settle(lock.txid, [release(key, lock.txid, row.version is None)])
        else:
            assert lock.state == PENDING and lock.head is not None, lock
            if self.stale(lock.head):
                if await self.abort(lock.txid, lock.head.heartbeat_ms):
                    await self.settle(lock.txid, [release(key, lock.txid, row.version is None)])
            else:
                await waiter.wait(key, lock.txid)

    def stale(self, head: Head) -> bool:
        return self.ctx.clock_ms() - head.heartbeat_ms > self.ctx.txn_timeout_s * 1000

    async def abort(self, txid: str, heartbeat_ms: int | None = None) -> bool:
        """pending -> aborted (only if the heartbeat is still `heartbeat_ms`, if given).
        False if the transaction was not pending (or heartbeated since)."""
        cond = "#st = :pending" + ("" if heartbeat_ms is None else " AND #hb = :hb")
        values: dict[str, Any] = {"pending": {"S": PENDING}, "aborted": {"S": ABORTED}}
        if heartbeat_ms is not None:
            values["hb"] = num(heartbeat_ms)
        try:
            await self.req.write("Update", {"Key": head_key(txid), **expression(
                "SET #st = :aborted", cond, **values)})
            return True
        except ConditionFailed:
            return False

    async def settle(self, txid: str, writes: list[tuple[str, dict[str, Any]]],
                     step: str | None = None) -> None:
        """Roll forward or release rows `txid` holds (writes conditional on its lock): a
        TransactWriteItems per 100, row by row where some were settled by others
        already. `step` names the protocol step passed between waves of requests."""
        if len(writes) == 1:
            return await self._settle_one(*writes[0])
        groups = write_groups(writes)
        for wave in range(0, len(groups), self.ctx.parallelism):
            await all_of([self._settle_group(g)
                          for g in groups[wave:wave + self.ctx.parallelism]])
            if step is not None and wave + self.ctx.parallelism < len(groups):
                await self.ctx.step(step, txid)

    async def _settle_one(self, kind: str, fields: dict[str, Any]) -> None:
        try:
            await self.req.write(kind, fields)
        except ConditionFailed:
            pass  # someone else settled it

    async def _settle_group(self, group: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            await self.req.transact(group)
        except Cancelled:
            for kind, fields in group:
                await self._settle_one(kind, fields)


class Batch:
    """One big write batch run by the protocol (see the module doc)."""

    def __init__(self, ctx: Context, locks: Locks, ops: list[Op]) -> None:
        self.ctx = ctx
        self.locks = locks
        self.req = ctx.requests
        self.ops = ops
        self.order = sorted(range(len(ops)), key=lambda i: ops[i].key)
        self.seen: dict[str, int | None] = {}
        self.versions: list[int] = []
        self.txid = ""
        self.committing = False
        self.parts = 0
        self.heartbeat_ms = 0

    async def run(self) -> list[int]:
        for _ in range(ATTEMPTS):
            try:
                return await self._attempt()
            except AbortedByOthers:
                log.warning("metadata batch %s was aborted by another process; again",
                            self.txid)
        raise Unavailable(f"a metadata batch of {len(self.ops)} ops was aborted {ATTEMPTS} "
                          "times as stale (is this process starved for minutes?)")

    async def _attempt(self) -> list[int]:
        await self._read()
        self.txid = self.ctx.new_id()
        self.committing = False
        locked: list[int] = []
        group: list[int] = []  # being locked: maybe locked, after an ambiguous request
        try:
            await self._write_record()
            await self.ctx.step("recorded", self.txid)
            for group in transaction_groups(self.ops, self.order):
                await self._lock(group)
                locked.extend(group)
                group = []
                await self.ctx.step("locked-group", self.txid)
                await self._heartbeat(due_only=True)
            await self.ctx.step("locked", self.txid)
            await self._commit()
        except VersionMismatch:
            await self._abandon(locked)  # (the group that failed was not locked)
            raise
        except Indeterminate as e:
            if self.committing:
                raise  # the commit may have landed: rows and record stay for the resolvers
            await self._abandon(locked + group)
            # Only the commit step commits: nothing of the batch can ever apply.
            raise Unavailable(f"metadata batch not applied: {e}") from e
        except Exception:
            await self._abandon(locked + group)
            raise
        await self.ctx.step("committed", self.txid)
        await self._finish()
        return self.versions

    async def _read(self) -> None:
        rows = await self.locks.read_rows([op.key for op in self.ops])
        heads: dict[str, Head | None] = {}
        for op in self.ops:
            view, _ = await self.locks.view(op.key, rows.get(op.key), heads)
            self.seen[op.key] = None if view is None else view.version
        # the first op (in batch order) whose condition fails raises VersionMismatch
        self.versions = [next_version(op, self.seen[op.key]) for op in self.ops]

    async def _write_record(self) -> None:
        keys = [self.ops[i].key for i in self.order]
        parts = key_parts(keys)
        self.parts = len(parts)
        self.heartbeat_ms = self.ctx.clock_ms()
        try:
            await self.req.write("Put", {
                "Item": head_item(self.txid, self.ctx.owner, self.heartbeat_ms, self.parts),
                **expression(condition="attribute_not_exists(#sk)")})
        except ConditionFailed as e:  # our own first attempt, unless ids collide
            head = await self.locks.head(self.txid)
            assert e.ambiguous and head is not None and head.owner == self.ctx.owner, head
        await self.req.batch_write([{"PutRequest": {"Item": part_item(self.txid, i, p)}}
                                    for i, p in enumerate(parts)])

    async def _lock(self, group: list[int]) -> None:
        waiter = Waiter(self.ctx, on_wait=lambda: self._heartbeat(due_only=True))
        while True:
            writes = [lock_write(self.ops[i], self.seen[self.ops[i].key], self.versions[i],
                                 self.txid) for i in group]
            try:
                await self.req.transact(writes)
                return
            except Cancelled as c:
                failed = [group[j] for j in c.failed]
            if await self._conflicts(failed, waiter):
                return

    async def _conflicts(self, failed: list[int], waiter: Waiter) -> bool:
        """Handle the rows whose lock condition failed; True if this transaction holds
        them already (an earlier, ambiguous attempt of the group locked it)."""
        heads: dict[str, Head | None] = {}
        for i in failed:
            op = self.ops[i]
            row = await self.locks.read_row(op.key)
            if row is not None and row.lock == self.txid:
                return True  # a group is locked whole or not at all
            view, lock = await self.locks.view(op.key, row, heads)
            current = None if view is None else view.version
            self.versions[i] = next_version(op, current)  # VersionMismatch: the batch fails
            self.seen[op.key] = current  # (a changed row under an unconditional op)
            if lock is not None and row is not None:
                await self.locks.clear(op.key, row, lock, waiter)
        return False

    async def _heartbeat(self, due_only: bool = False) -> None:
        now = self.ctx.clock_ms()
        if due_only and now - self.heartbeat_ms < self.ctx.txn_timeout_s * 250:
            return
        try:
            await self.req.write("Update", {"Key": head_key(self.txid), **expression(
                "SET #hb = :now", "#st = :pending", now=num(now), pending={"S": PENDING})})
        except ConditionFailed:
            raise AbortedByOthers(self.txid) from None
        self.heartbeat_ms = now

    async def _commit(self) -> None:
        """pending -> committed. AbortedByOthers if others aborted the transaction first;
        Indeterminate if the outcome cannot be learnt."""
        self.committing = True
        ambiguous = True
        try:
            await self.req.write("Update", {"Key": head_key(self.txid), **expression(
                "SET #st = :committed", "#st = :pending",
                committed={"S": COMMITTED}, pending={"S": PENDING})})
            return
        except ConditionFailed as e:
            ambiguous = e.ambiguous
        except Indeterminate as e:
            # Settle it: an abort that lands means the commit never will.
            try:
                aborted = await self.locks.abort(self.txid)
            except S2Error:
                raise e from None
            if aborted:
                self.committing = False
                raise Unavailable(f"commit of metadata transaction {self.txid} failed: {e}"
                                  ) from e
        head = await self.locks.head(self.txid)
        if head is None and ambiguous:  # cleaned up: aborted, or committed by us and finished
            raise Indeterminate(f"metadata transaction {self.txid} vanished at its commit")
        if head is None or head.state != COMMITTED:
            self.committing = False
            raise AbortedByOthers(self.txid)

    async def _finish(self) -> None:
        """Apply every row and delete the record; failures leave both to resolvers."""
        try:
            await self.locks.settle(self.txid, [
                roll_forward(self.ops[i].key, self.txid, self.ops[i].value, self.versions[i])
                for i in self.order], step="applied-group")
            await self.ctx.step("applied", self.txid)
            await delete_record(self.req, self.txid, self.parts)
        except Exception as e:  # noqa: BLE001 - committed: the caller's write succeeded
            log.warning("metadata transaction %s committed; finishing it failed (%r): "
                        "readers resolve its rows, recover() its record", self.txid, e)

    async def _abandon(self, held: list[int]) -> None:
        """Abort this transaction and release what it may hold (best effort: what is
        left, resolvers and recover() clean up)."""
        try:
            if not await self.locks.abort(self.txid):
                head = await self.locks.head(self.txid)
                if head is not None and head.state == COMMITTED:
                    return  # (cannot happen: only the commit step commits)
            await self.locks.settle(self.txid, [
                release(self.ops[i].key, self.txid, self.seen[self.ops[i].key] is None)
                for i in held])
            await delete_record(self.req, self.txid, self.parts)
        except Exception as e:  # noqa: BLE001 - the batch's own error is what the caller sees
            log.warning("abandoning metadata transaction %s failed (%r); its locks are "
                        "resolved by whoever meets them", self.txid, e)


async def delete_record(req: DynamoRequests, txid: str, parts: int) -> None:
    """Parts first, head last: a head without parts means nothing is locked any more."""
    await req.batch_write([{"DeleteRequest": {"Key": part_key(txid, i)}} for i in range(parts)])
    await req.write("Delete", {"Key": head_key(txid)})


async def recover(ctx: Context, locks: Locks) -> int:
    """Finish the transactions whose owners went silent for `txn_timeout_s`: pending ones
    are aborted; the rows of each are rolled forward or released, and its record deleted.
    Returns how many were finished."""
    req = ctx.requests
    done = 0
    start: dict[str, Any] | None = None
    while True:
        page = await req.call(
            "query", write=False, TableName=req.table, ConsistentRead=True,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :heads)",
            ExpressionAttributeNames={"#pk": "pk", "#sk": "sk"},
            ExpressionAttributeValues={":pk": {"S": TXN}, ":heads": {"S": "h/"}},
            **({"ExclusiveStartKey": start} if start else {}))
        for item in page.get("Items", ()):
            head = parse_head(item)
            assert head is not None
            if not locks.stale(head):
                continue
            if head.state == PENDING and not await locks.abort(head.txid, head.heartbeat_ms):
                continue  # it moved on meanwhile: not abandoned after all
            await _finish_rows(req, locks, head)
            await delete_record(req, head.txid, head.parts)
            done += 1
        start = page.get("LastEvaluatedKey")
        if not start:
            return done


async def _finish_rows(req: DynamoRequests, locks: Locks, head: Head) -> None:
    """Roll forward (committed) or release (aborted) every row `head`'s transaction
    still holds. A missing part means none are held: parts are deleted only then."""
    items = await req.batch_get([part_key(head.txid, i) for i in range(head.parts)])
    keys = [k for item in items for k in part_keys(item)]
    rows = await locks.read_rows(keys)
    held = [row for row in rows.values() if row.lock == head.txid]
    if head.state == COMMITTED:
        writes = [roll_forward(r.key, head.txid, r.new_value, r.new_version or 0)
                  for r in held]
    else:
        writes = [release(r.key, head.txid, r.version is None) for r in held]
    await locks.settle(head.txid, writes)

