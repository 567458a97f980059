"""Kafka transactions (KIP-98): the transaction coordinator and each partition's view of
the transactions writing to it.

Coordinator. Each transactional id has a row `kafka/txn/<id>`: producer id and epoch, state
(Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort), timeout, the
partitions and groups added, and the offsets TxnOffsetCommit staged. Operations on one id
are serialized. InitProducerId gives a new id a producer id, and an existing one its next
epoch (fencing the previous producer), aborting a transaction it left open. EndTxn writes
PrepareCommit/PrepareAbort first, then a COMMIT or ABORT control batch (a marker) into
every partition of the transaction, applies the staged offsets on commit, and writes
CompleteCommit/CompleteAbort: a broker restarted between the two finishes the markers. A
transaction open longer than its timeout is aborted and its producer fenced (epoch bump),
as Kafka's coordinator does.

Partitions. Each partition with transactional data has a row
`kafka/txn-partition/<topic id>/<partition>`: the open transactions (producer id -> the
offset at or before its first batch there) and the aborted ones (producer id, first
offset, marker offset). A producer's first transactional batch in a partition is
registered (and the row written) before the batch is appended, at the then high
watermark, so the last stable offset (the first open transaction's first offset, else the
high watermark) never passes an undecided record. Fetch at read_committed serves records
below it and lists the aborted transactions it returns, with which clients drop aborted
records; ListOffsets at read_committed answers it for the latest offset.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.protocol.errors import ErrorCode as E
from broker.protocol.records import build_control_batch
from s2core.errors import S2Error
from s2core.metadata.base import VersionMismatch
from s2core.records import AppendRecord

if TYPE_CHECKING:
    from broker.kafka import Broker

log = logging.getLogger(__name__)

MAX_EPOCH = 32767
MAX_TIMEOUT_MS = 900_000  # Kafka's transaction.max.timeout.ms
ID_EXPIRATION_MS = 7 * 86_400_000  # Kafka's transactional.id.expiration.ms
_TXN = "kafka/txn/"
_PART = "kafka/txn-partition/"
EMPTY, ONGOING = "Empty", "Ongoing"
PREPARE_COMMIT, PREPARE_ABORT = "PrepareCommit", "PrepareAbort"
COMPLETE_COMMIT, COMPLETE_ABORT = "CompleteCommit", "CompleteAbort"


class TxnError(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or E(code).name)
        self.code = code


def fenced_code(version: int, since: int) -> int:
    """What a stale producer gets: PRODUCER_FENCED from the API version `since` which knows
    it (KIP-588), INVALID_PRODUCER_EPOCH before."""
    return E.PRODUCER_FENCED if version >= since else E.INVALID_PRODUCER_EPOCH


async def error_code(call) -> int:
    """The Kafka error code of a coordinator call (awaited here): NONE, its TxnError's, or
    COORDINATOR_NOT_AVAILABLE (retriable) when the store failed under it."""
    try:
        await call
    except TxnError as e:
        return e.code
    except S2Error:
        return E.COORDINATOR_NOT_AVAILABLE
    return E.NONE


@dataclass
class TxnState:
    tid: str
    pid: int
    epoch: int
    state: str = EMPTY
    timeout_ms: int = 60_000
    partitions: list = field(default_factory=list)  # [topic, partition] pairs, in order
    groups: list = field(default_factory=list)
    offsets: dict = field(default_factory=dict)  # group -> [[topic, p, offset, epoch, meta]]
    started_ms: int = -1
    updated_ms: int = -1
    version: int = 0  # of the metadata row (0: not written yet)

    def to_json(self) -> bytes:
        return json.dumps({"pid": self.pid, "epoch": self.epoch, "state": self.state,
                           "timeout_ms": self.timeout_ms, "partitions": self.partitions,
                           "groups": self.groups, "offsets": self.offsets,
                           "started_ms": self.started_ms,
                           "updated_ms": self.updated_ms}).encode()


@dataclass
class PartitionTxns:
    ongoing: dict = field(default_factory=dict)  # producer id -> first offset (or before)
    aborted: list = field(default_factory=list)  # [pid, first offset, marker offset]
    version: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"ongoing": {str(k): v for k, v in self.ongoing.items()},
                           "aborted": self.aborted}).encode()


class TransactionCoordinator:
    """Transactions of this broker (see the module doc)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.states: dict[str, TxnState] = {}
        self.by_pid: dict[int, str] = {}
        self.parts: dict[tuple[str, int], PartitionTxns] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._part_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._task: asyncio.Task | None = None

    @property
    def metadata(self):
        return self.broker.store.metadata

    def _now(self) -> int:
        return self.broker.store.clock.now_ms()

    def _lock(self, tid: str) -> asyncio.Lock:
        lock = self._locks.get(tid)
        if lock is None:
            lock = self._locks[tid] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every transactional id; finish the transactions a stop left prepared."""
        for key, v in await self.metadata.list_prefix(_TXN):
            d = json.loads(v.value)
            st = TxnState(key[len(_TXN):], d["pid"], d["epoch"], d["state"], d["timeout_ms"],
                          d["partitions"], d["groups"], d["offsets"], d["started_ms"],
                          d.get("updated_ms", -1), v.version)
            self.states[st.tid] = st
            self.by_pid[st.pid] = st.tid
        for st in list(self.states.values()):
            if st.state in (PREPARE_COMMIT, PREPARE_ABORT):
                try:
                    async with self._lock(st.tid):
                        await self._complete(st)
                except (S2Error, VersionMismatch) as e:
                    log.warning("finishing transaction %s failed: %s", st.tid, e)

    def run_expiry(self, stop: asyncio.Event, interval_s: float = 1.0) -> asyncio.Task:
        async def loop() -> None:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                except TimeoutError:
                    try:
                        await self.abort_expired()
                    except Exception:
                        log.exception("transaction timeout pass failed")
        self._task = asyncio.get_running_loop().create_task(loop())
        return self._task

    async def abort_expired(self) -> int:
        """Abort (and fence) transactions open longer than their timeout; forget the
        transactional ids unused for ID_EXPIRATION_MS (a producer using one again later
        starts from a new producer id, as with Kafka)."""
        now = self._now()
        n = 0
        for st in list(self.states.values()):
            if st.state in (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT) and \
                    now - st.updated_ms > ID_EXPIRATION_MS:
                async with self._lock(st.tid):
                    if self.states.get(st.tid) is st and now - st.updated_ms > ID_EXPIRATION_MS:
                        await self.metadata.delete(_TXN + st.tid, st.version)
                        del self.states[st.tid]
                        self.by_pid.pop(st.pid, None)
                        self._locks.pop(st.tid, None)
                continue
            if st.state == ONGOING and now - st.started_ms > st.timeout_ms:
                async with self._lock(st.tid):
                    if st.state == ONGOING and now - st.started_ms > st.timeout_ms:
                        log.info("transaction %s timed out: aborting", st.tid)
                        await self._end(st, commit=False, bump=True)
                        n += 1
        return n

    async def _save(self, st: TxnState) -> None:
        st.updated_ms = self._now()
        key = _TXN + st.tid
        if st.version == 0:
            st.version = await self.metadata.create(key, st.to_json())
        else:
            st.version = await self.metadata.put(key, st.to_json(), st.version)

    # ------------------------------------------------------------------ coordinator

    async def init_producer_id(self, tid: str, timeout_ms: int, pid: int, epoch: int,
                               fenced: int) -> tuple[int, int]:
        """(producer id, epoch) for a transactional producer; TxnError otherwise.
        `fenced` is the error code a stale producer gets."""
        if not tid:
            raise TxnError(E.INVALID_REQUEST, "empty transactional id")
        if not 0 < timeout_ms <= MAX_TIMEOUT_MS:
            raise TxnError(E.INVALID_TRANSACTION_TIMEOUT,
                           f"transaction timeout must be 1..{MAX_TIMEOUT_MS} ms")
        async with self._lock(tid):
            st = self.states.get(tid)
            if st is None:
                st = TxnState(tid, await self.broker.producers.allocate_id(), 0,
                              timeout_ms=timeout_ms)
                await self._save(st)
                self.states[tid] = st
                self.by_pid[st.pid] = tid
                return st.pid, st.epoch
            if pid >= 0 and (pid, epoch) != (st.pid, st.epoch):
                # KIP-360: a producer recovering with its own id and epoch; another one
                # is a zombie
                raise TxnError(fenced, "the producer id and epoch are not the current ones")
            if st.state in (PREPARE_COMMIT, PREPARE_ABORT):
                await self._complete(st)
            if st.state == ONGOING:
                await self._end(st, commit=False, bump=False)
            if st.epoch >= MAX_EPOCH - 1:
                self.by_pid.pop(st.pid, None)
                st.pid, st.epoch = await self.broker.producers.allocate_id(), 0
                self.by_pid[st.pid] = tid
            else:
                st.epoch += 1
            st.timeout_ms = timeout_ms
            st.state = EMPTY
            await self._save(st)
            return st.pid, st.epoch

    def _check(self, tid: str, pid: int, epoch: int, fenced: int) -> TxnState:
        st = self.states.get(tid)
        if st is None or st.pid != pid:
            raise TxnError(E.INVALID_PRODUCER_ID_MAPPING,
                           "the producer id is not that of this transactional id")
        if epoch != st.epoch:
            raise TxnError(fenced, f"producer epoch {epoch} is not the current {st.epoch}")
        if st.state in (PREPARE_COMMIT, PREPARE_ABORT):
            raise TxnError(E.CONCURRENT_TRANSACTIONS, "the transaction is ending")
        return st

    async def add_partitions(self, tid: str, pid: int, epoch: int,
                             partitions: list[tuple[str, int]], fenced: int) -> None:
        async with self._lock(tid):
            st = self._check(tid, pid, epoch, fenced)
            self._begin(st)
            for tp in partitions:
                if list(tp) not in st.partitions:
                    st.partitions.append(list(tp))
            await self._save(st)

    async def add_offsets(self, tid: str, pid: int, epoch: int, group: str,
                          fenced: int) -> None:
        async with self._lock(tid):
            st = self._check(tid, pid, epoch, fenced)
            self._begin(st)
            if group not in st.groups:
                st.groups.append(group)
            await self._save(st)

    async def stage_offsets(self, tid: str, pid: int, epoch: int, group: str,
                            rows: list[list], fenced: int) -> None:
        """TxnOffsetCommit: offsets applied to `group` if the transaction commits."""
        async with self._lock(tid):
            st = self._check(tid, pid, epoch, fenced)
            if st.state != ONGOING or group not in st.groups:
                raise TxnError(E.INVALID_TXN_STATE,
                               f"group {group!r} was not added to the transaction")
            staged = {(r[0], r[1]): r for r in st.offsets.get(group, [])}
            for r in rows:
                staged[(r[0], r[1])] = r
            st.offsets[group] = list(staged.values())
            await self._save(st)

    def pending_offsets(self, group: str) -> set[tuple[str, int]]:
        """Partitions of `group` with offsets staged by an open transaction."""
        out = set()
        for st in self.states.values():
            if st.state in (ONGOING, PREPARE_COMMIT):
                for r in st.offsets.get(group, ()):
                    out.add((r[0], r[1]))
        return out

    def _begin(self, st: TxnState) -> None:
        if st.state != ONGOING:
            st.state = ONGOING
            st.started_ms = self._now()
            st.partitions, st.groups, st.offsets = [], [], {}

    async def end_txn(self, tid: str, pid: int, epoch: int, commit: bool,
                      fenced: int) -> None:
        async with self._lock(tid):
            st = self.states.get(tid)
            if st is not None and st.pid == pid and st.epoch == epoch and (
                    (commit and st.state == COMPLETE_COMMIT)
                    or (not commit and st.state == COMPLETE_ABORT)):
                return  # a retry of an EndTxn that went through
            st = self._check(tid, pid, epoch, fenced)
            if st.state != ONGOING:
                raise TxnError(E.INVALID_TXN_STATE,
                               f"no transaction to {'commit' if commit else 'abort'} "
                               f"(state {st.state})")
            await self._end(st, commit, bump=False)

    async def _end(self, st: TxnState, commit: bool, bump: bool) -> None:
        st.state = PREPARE_COMMIT if commit else PREPARE_ABORT
        if bump and st.epoch < MAX_EPOCH - 1:
            st.epoch += 1  # the timed-out producer is fenced
        await self._save(st)
        await self._complete(st)

    async def _complete(self, st: TxnState) -> None:
        commit = st.state == PREPARE_COMMIT
        for topic, p in st.partitions:
            await self._write_marker(topic, p, st.pid, st.epoch, commit)
        if commit:
            groups = self.broker.extensions["groups"]
            for group, rows in st.offsets.items():
                if rows:
                    now = self._now()
                    pending = await groups.submit_commit(
                        group, [[t, p, off, ep, meta, now] for t, p, off, ep, meta in rows])
                    await groups.journal.wait(pending)
        st.state = COMPLETE_COMMIT if commit else COMPLETE_ABORT
        st.offsets = {}
        await self._save(st)

    # ------------------------------------------------------------------ partitions

    async def partition(self, topic: str, p: int) -> PartitionTxns:
        key = (topic, p)
        pt = self.parts.get(key)
        if pt is None:
            t = self.broker.topics.get(topic)
            pt = PartitionTxns()
            if t is not None:
                row = await self.metadata.get(self._part_key(t.id, p))
                if row is not None:
                    d = json.loads(row.value)
                    pt = PartitionTxns({int(k): v for k, v in d["ongoing"].items()},
                                       d["aborted"], row.version)
            pt = self.parts.setdefault(key, pt)
        return pt

    @staticmethod
    def _part_key(topic_id: bytes, p: int) -> str:
        return f"{_PART}{topic_id.hex()}/{p}"

    async def _save_partition(self, topic: str, p: int, pt: PartitionTxns) -> None:
        t = self.broker.topics.get(topic)
        if t is None:
            return
        key = self._part_key(t.id, p)
        if pt.version == 0:
            pt.version = await self.metadata.create(key, pt.to_json())
        else:
            pt.version = await self.metadata.put(key, pt.to_json(), pt.version)

    def _plock(self, topic: str, p: int) -> asyncio.Lock:
        lock = self._part_locks.get((topic, p))
        if lock is None:
            lock = self._part_locks[(topic, p)] = asyncio.Lock()
        return lock

    async def before_produce(self, topic: str, p: int, pid: int, epoch: int,
                             fenced: int) -> None:
        """A transactional batch of `pid` is about to be appended to the partition."""
        tid = self.by_pid.get(pid)
        st = self.states.get(tid) if tid is not None else None
        if st is None:
            raise TxnError(E.INVALID_PRODUCER_ID_MAPPING,
                           "no transactional id has this producer id")
        if epoch != st.epoch:
            raise TxnError(fenced, f"producer epoch {epoch} is not the current {st.epoch}")
        if st.state != ONGOING or [topic, p] not in st.partitions:
            raise TxnError(E.INVALID_TXN_STATE,
                           f"partition {topic}-{p} was not added to the transaction")
        pt = await self.partition(topic, p)
        if pid in pt.ongoing:
            return
        async with self._plock(topic, p):
            if pid not in pt.ongoing:
                _, hw = await self.broker.partition_bounds(topic, p)
                pt.ongoing[pid] = hw
                await self._save_partition(topic, p, pt)

    async def _write_marker(self, topic: str, p: int, pid: int, epoch: int,
                            commit: bool) -> None:
        b = self.broker
        now = self._now()
        body = bytes(build_control_batch(commit=commit, producer_id=pid, producer_epoch=epoch,
                                         coordinator_epoch=0, offset=0, timestamp=now))
        try:
            ack = await b.store.append(b.basin, b.stream(topic, p),
                                       [AppendRecord(body=body, timestamp=now, span=1)])
        except S2Error:
            if b.topics.get(topic) is None:  # deleted meanwhile: nothing to mark
                return
            raise
        marker = ack.start.seq_num
        pt = await self.partition(topic, p)
        async with self._plock(topic, p):
            first = pt.ongoing.pop(pid, None)
            if not commit and first is not None:
                pt.aborted.append([pid, first, marker])
                start = await b.store.first_seq(b.basin, b.stream(topic, p))
                pt.aborted = [a for a in pt.aborted if a[2] >= start]
            await self._save_partition(topic, p, pt)

    def last_stable(self, topic: str, p: int, hw: int) -> int:
        """The last stable offset (the partition's state must be loaded)."""
        pt = self.parts.get((topic, p))
        if pt is None or not pt.ongoing:
            return hw
        return min(hw, min(pt.ongoing.values()))

    def aborted_between(self, topic: str, p: int, start: int, end: int) -> list[list]:
        """Aborted transactions with records in [start, end): [pid, first offset]."""
        pt = self.parts.get((topic, p))
        if pt is None:
            return []
        return [[pid, first] for pid, first, last in pt.aborted
                if last >= start and first < end]

    def forget_topic(self, topic: str) -> None:
        for key in [k for k in self.parts if k[0] == topic]:
            del self.parts[key]

    def describe(self, tid: str) -> TxnState | None:
        return self.states.get(tid)
