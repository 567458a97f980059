"""Kafka transactions (KIP-98): the transaction coordinator and each partition's view of
the transactions writing to it (docs/decisions/0015 and 0020).

Coordinator. Each transactional id has a row `kafka/txn/<id>`: producer id and epoch, state
(Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort), timeout, the
partitions and groups added. Operations on one id are serialized. InitProducerId gives a
new id a producer id (and a row `kafka/txn-pid/<pid>` naming the id, with which partition
leaders check a batch), and an existing one its next epoch (fencing the previous
producer), aborting a transaction it left open. EndTxn writes PrepareCommit/PrepareAbort
first, then a COMMIT or ABORT control batch (a marker) goes into every partition of the
transaction and to every group's coordinator, then CompleteCommit/CompleteAbort. A marker
for a partition or group another broker serves is a WriteTxnMarkers request to it
(broker/interbroker.py), as between Kafka's brokers. EndTxn is answered once the markers
are in, or after MARKER_WAIT_S with the rest finished in the background (the decision is
durable from the Prepare state on; the id answers CONCURRENT_TRANSACTIONS meanwhile). A
broker that takes over an id finishes what a stop left prepared. A transaction open longer
than its timeout is aborted and its producer fenced (epoch bump), as Kafka's coordinator
does. The coordinator of an id is the broker serving the group journal partition of its
hash (broker/groups/journal.py); each broker that takes a journal partition up bumps its
coordinator epoch (`kafka/txn-coordinator-epoch/<partition>`), which the markers carry.

Groups. TxnOffsetCommit goes to the group's coordinator, which checks the transaction
against its coordinator's row and keeps the offsets staged in `kafka/txn-offsets/<group>/
<producer id>` until a marker for the group's journal partition (topic
`__consumer_offsets`, as in Kafka) applies them (commit) or drops them (abort).

Partitions. Each partition with transactional data has a row
`kafka/txn-partition/<topic id>/<partition>`: the open transactions (producer id -> the
offset at or before its first batch there), the aborted ones (producer id, first offset,
marker offset) and the last coordinator epoch per producer (a marker from an older
coordinator is refused: TRANSACTION_COORDINATOR_FENCED). A producer's first transactional
batch in a partition is checked against its coordinator's row and registered (and the row
written) before the batch is appended, at the then high watermark, so the last stable
offset (the first open transaction's first offset, else the high watermark) never passes
an undecided record. Fetch at read_committed serves records below it and lists the aborted
transactions it returns, with which clients drop aborted records; ListOffsets at
read_committed answers it for the latest offset.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.groups.journal import partition_of
from broker.protocol.errors import ErrorCode as E
from broker.protocol.records import build_control_batch
from s2core.errors import NotServed, S2Error, StreamNotFound
from s2core.metadata import list_all
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
_PID = "kafka/txn-pid/"        # producer id -> its transactional id
_STAGED = "kafka/txn-offsets/"  # <group>/<producer id> -> offsets staged by a transaction
_CEPOCH = "kafka/txn-coordinator-epoch/"  # <journal partition> -> its coordinator epoch
GROUPS_TOPIC = "__consumer_offsets"  # a marker for the groups of a journal partition
MARKER_WAIT_S = 5.0  # EndTxn waits this long for its markers, then answers
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

    @classmethod
    def from_row(cls, tid: str, raw: bytes, version: int) -> TxnState:
        d = json.loads(raw)
        # ("offsets": staged in the row by versions before 0020; finished as they were)
        return cls(tid, d["pid"], d["epoch"], d["state"], d["timeout_ms"], d["partitions"],
                   d["groups"], d.get("offsets", {}), d["started_ms"],
                   d.get("updated_ms", -1), version)


@dataclass
class PartitionTxns:
    ongoing: dict = field(default_factory=dict)  # producer id -> first offset (or before)
    aborted: list = field(default_factory=list)  # [pid, first offset, marker offset]
    version: int = 0
    cepochs: dict = field(default_factory=dict)  # producer id -> last coordinator epoch

    def to_json(self) -> bytes:
        return json.dumps({"ongoing": {str(k): v for k, v in self.ongoing.items()},
                           "aborted": self.aborted,
                           "cepochs": {str(k): v for k, v in self.cepochs.items()}}).encode()


class TransactionCoordinator:
    """Transactions of this broker (see the module doc)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.states: dict[str, TxnState] = {}  # the ids this broker coordinates
        self.by_pid: dict[int, str] = {}
        self.parts: dict[tuple[str, int], PartitionTxns] = {}
        # offsets staged here as group coordinator: group -> producer id -> [rows, version,
        # staged at (ms)]
        self.staged: dict[str, dict[int, list]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._part_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._finishing: dict[str, asyncio.Task] = {}
        self._tids: dict[int, str] = {}  # producer id -> transactional id (read elsewhere)
        self._verified: dict[tuple[str, int, int], int] = {}  # (topic, p, pid) -> epoch
        self._cepochs: dict[int, int] = {}  # journal partition -> coordinator epoch here
        self._task: asyncio.Task | None = None

    @property
    def metadata(self):
        return self.broker.store.metadata

    @property
    def groups(self):
        return self.broker.extensions["groups"]

    def _now(self) -> int:
        return self.broker.store.clock.now_ms()

    def _lock(self, tid: str) -> asyncio.Lock:
        lock = self._locks.get(tid)
        if lock is None:
            lock = self._locks[tid] = asyncio.Lock()
        return lock

    def here(self, tid: str) -> bool:
        """Whether this broker coordinates `tid` (alone: every id)."""
        return not self.groups.not_here(tid)

    async def coordinator_of(self, tid: str) -> int | None:
        return await self.groups.coordinator_of(tid)

    def coordinator_epoch(self, tid: str) -> int:
        """The epoch of this broker's hold on `tid`'s journal partition: it grows with
        every broker that takes the partition up (`_take_up`), so a partition can refuse
        a late marker of an earlier coordinator."""
        return self._cepochs.get(partition_of(tid), 0)

    async def _take_up(self, indexes: set[int]) -> None:
        """A new coordinator epoch for each journal partition this broker takes up (at
        start, adopting a channel, or a partition moved here), as Kafka's coordinator
        takes the leader epoch of its `__transaction_state` partition."""
        for index in sorted(indexes):
            key = f"{_CEPOCH}{index}"
            while True:
                row = await self.metadata.get(key)
                epoch = (int(row.value) if row is not None else 0) + 1
                try:
                    if row is None:
                        await self.metadata.create(key, str(epoch).encode())
                    else:
                        await self.metadata.put(key, str(epoch).encode(), row.version)
                except VersionMismatch:
                    continue
                self._cepochs[index] = epoch
                break

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the transactional ids (and staged offsets) this broker serves; finish the
        transactions a stop left prepared."""
        await self._take_up({p.index for p in self.groups.journal.parts if p.local})
        tasks = await self._load(lambda key: not self.groups.not_here(key))
        if not self.broker.cluster.enabled:  # (alone, every marker is local: quick)
            for task in tasks:
                try:
                    await self._wait(task, time.monotonic() + MARKER_WAIT_S)
                except TxnError as e:
                    log.warning("finishing a transaction failed: %s", e)

    async def _load(self, ours) -> list[asyncio.Task]:
        tasks = []
        for key, v in await list_all(self.metadata, _TXN):
            tid = key[len(_TXN):]
            if not ours(tid):
                continue
            st = TxnState.from_row(tid, v.value, v.version)
            self.states[tid] = st
            self.by_pid[st.pid] = tid
            if st.state in (PREPARE_COMMIT, PREPARE_ABORT):
                tasks.append(self._finisher(st))
        for key, v in await list_all(self.metadata, _STAGED):
            group, _, pid = key[len(_STAGED):].rpartition("/")
            if ours(group):
                d = json.loads(v.value)
                self.staged.setdefault(group, {})[int(pid)] = [d["rows"], v.version, d["ms"]]
        return tasks

    async def adopt_channel(self, channel: str) -> None:
        """This broker serves `channel` now: the ids and groups of its journal streams."""
        await self.adopt_partitions({part.index for part in self.groups.journal.parts
                                     if part.channel == channel and part.local})

    async def adopt_partitions(self, indexes: set[int]) -> None:
        """This broker serves these journal partitions now: their ids and groups."""
        self._forget_partitions()
        if indexes:
            await self._take_up(indexes)
            await self._load(lambda key: partition_of(key) in indexes)

    def release_channel(self, channel: str) -> None:
        """`channel` is served elsewhere now: forget its ids and groups."""
        self.release_partitions({part.index for part in self.groups.journal.parts
                                 if part.channel == channel})

    def release_partitions(self, indexes: set[int]) -> None:
        """These journal partitions are served elsewhere now: forget their ids and
        groups."""
        self._forget_partitions()
        for index in indexes:
            self._cepochs.pop(index, None)
        for tid in [t for t in self.states if partition_of(t) in indexes]:
            st = self.states.pop(tid)
            self.by_pid.pop(st.pid, None)
            task = self._finishing.pop(tid, None)
            if task is not None:
                task.cancel()
        for group in [g for g in self.staged if partition_of(g) in indexes]:
            del self.staged[group]

    def _forget_partitions(self) -> None:
        """Partition leaders changed: the partitions' rows are read again when needed."""
        self.parts.clear()
        self._verified.clear()

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
            for task in list(self._finishing.values()):
                task.cancel()
        self._task = asyncio.get_running_loop().create_task(loop())
        return self._task

    async def abort_expired(self) -> int:
        """Abort (and fence) transactions open longer than their timeout; forget the
        transactional ids unused for ID_EXPIRATION_MS (a producer using one again later
        starts from a new producer id, as with Kafka); drop offsets staged by a transaction
        that can no longer be open."""
        now = self._now()
        n = 0
        started: list[asyncio.Task] = []
        for st in list(self.states.values()):
            if st.state in (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT) and \
                    now - st.updated_ms > ID_EXPIRATION_MS:
                async with self._lock(st.tid):
                    if self.states.get(st.tid) is st and now - st.updated_ms > ID_EXPIRATION_MS:
                        await self.metadata.delete(_TXN + st.tid, st.version)
                        await self.metadata.delete(f"{_PID}{st.pid}")
                        del self.states[st.tid]
                        self.by_pid.pop(st.pid, None)
                        self._locks.pop(st.tid, None)
                continue
            if st.state in (PREPARE_COMMIT, PREPARE_ABORT) and st.tid not in self._finishing:
                self._finisher(st)  # (its last try failed, and no client asked again)
                continue
            if st.state == ONGOING and now - st.started_ms > st.timeout_ms:
                async with self._lock(st.tid):
                    if st.state == ONGOING and now - st.started_ms > st.timeout_ms:
                        log.info("transaction %s timed out: aborting", st.tid)
                        await self._prepare(st, commit=False, bump=True)
                        started.append(self._finisher(st))
                        n += 1
        for group, by_pid in list(self.staged.items()):
            for pid, (_, version, ms) in list(by_pid.items()):
                if now - ms > 2 * MAX_TIMEOUT_MS:  # (its marker never came: a lost race)
                    await self._drop_staged(group, pid, version)
        if started:  # (their markers: quick when local, else finished in the background)
            await asyncio.wait(started, timeout=MARKER_WAIT_S)
        return n

    async def _save(self, st: TxnState) -> None:
        st.updated_ms = self._now()
        key = _TXN + st.tid
        try:
            if st.version == 0:
                st.version = await self.metadata.create(key, st.to_json())
            else:
                st.version = await self.metadata.put(key, st.to_json(), st.version)
        except VersionMismatch:  # another broker coordinates the id now
            if self.states.get(st.tid) is st:
                del self.states[st.tid]
                self.by_pid.pop(st.pid, None)
            raise TxnError(E.NOT_COORDINATOR, "the transaction's state changed elsewhere") \
                from None

    async def _index(self, st: TxnState) -> None:
        """The row that names a producer id's transactional id (partition leaders and group
        coordinators read it to check a transactional request)."""
        try:
            await self.metadata.create(f"{_PID}{st.pid}", st.tid.encode())
        except VersionMismatch:
            pass

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
        deadline = time.monotonic() + MARKER_WAIT_S
        while True:
            if not self.here(tid):
                raise TxnError(E.NOT_COORDINATOR, "another broker coordinates this id")
            async with self._lock(tid):
                st = self.states.get(tid)
                if st is None:
                    st = TxnState(tid, await self.broker.producers.allocate_id(), 0,
                                  timeout_ms=timeout_ms)
                    await self._index(st)
                    await self._save(st)
                    self.states[tid] = st
                    self.by_pid[st.pid] = tid
                    return st.pid, st.epoch
                if pid >= 0 and (pid, epoch) != (st.pid, st.epoch):
                    # KIP-360: a producer recovering with its own id and epoch; another one
                    # is a zombie
                    raise TxnError(fenced, "the producer id and epoch are not the current ones")
                if st.state == ONGOING:
                    await self._prepare(st, commit=False, bump=False)
                if st.state not in (PREPARE_COMMIT, PREPARE_ABORT):
                    if st.epoch >= MAX_EPOCH - 1:
                        self.by_pid.pop(st.pid, None)
                        st.pid, st.epoch = await self.broker.producers.allocate_id(), 0
                        self.by_pid[st.pid] = tid
                    else:
                        st.epoch += 1
                    st.timeout_ms = timeout_ms
                    st.state = EMPTY
                    await self._index(st)
                    await self._save(st)
                    return st.pid, st.epoch
                task = self._finisher(st)
            if not await self._wait(task, deadline):
                raise TxnError(E.CONCURRENT_TRANSACTIONS, "the last transaction is ending")

    def _check(self, tid: str, pid: int, epoch: int, fenced: int) -> TxnState:
        if not self.here(tid):
            raise TxnError(E.NOT_COORDINATOR, "another broker coordinates this id")
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

    def _begin(self, st: TxnState) -> None:
        if st.state != ONGOING:
            st.state = ONGOING
            st.started_ms = self._now()
            st.partitions, st.groups, st.offsets = [], [], {}

    async def end_txn(self, tid: str, pid: int, epoch: int, commit: bool,
                      fenced: int) -> None:
        decided = (PREPARE_COMMIT, COMPLETE_COMMIT) if commit else \
            (PREPARE_ABORT, COMPLETE_ABORT)
        async with self._lock(tid):
            st = self.states.get(tid)
            retry = st is not None and st.pid == pid and st.epoch == epoch and \
                self.here(tid) and st.state in decided
            if retry and st.state in (COMPLETE_COMMIT, COMPLETE_ABORT):
                return  # a retry of an EndTxn that went through
            if not retry:
                st = self._check(tid, pid, epoch, fenced)
                if st.state != ONGOING:
                    raise TxnError(E.INVALID_TXN_STATE,
                                   f"no transaction to {'commit' if commit else 'abort'} "
                                   f"(state {st.state})")
                await self._prepare(st, commit, bump=False)
            task = self._finisher(st)
        if not await self._wait(task, time.monotonic() + MARKER_WAIT_S) and retry:
            # (the first answer comes once the decision is durable, as Kafka's)
            raise TxnError(E.CONCURRENT_TRANSACTIONS, "the transaction is ending")

    async def _prepare(self, st: TxnState, commit: bool, bump: bool) -> None:
        """The decision, durable before any marker is written."""
        st.state = PREPARE_COMMIT if commit else PREPARE_ABORT
        if bump and st.epoch < MAX_EPOCH - 1:
            st.epoch += 1  # the timed-out producer is fenced
        await self._save(st)

    def _finisher(self, st: TxnState) -> asyncio.Task:
        """The task writing the markers of `st`'s prepared transaction (started if none)."""
        task = self._finishing.get(st.tid)
        if task is None or task.done():
            task = self._finishing[st.tid] = asyncio.get_running_loop().create_task(
                self._finish(st))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # (logged)
        return task

    @staticmethod
    async def _wait(task: asyncio.Task, deadline: float) -> bool:
        """Whether `task` ended by `deadline`; its TxnError is raised."""
        try:
            await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        return True

    async def _finish(self, st: TxnState) -> None:
        commit = st.state == PREPARE_COMMIT
        try:
            await self._send_markers(st, commit)
            async with self._lock(st.tid):
                if self.states.get(st.tid) is st and st.state in (PREPARE_COMMIT,
                                                                  PREPARE_ABORT):
                    st.state = COMPLETE_COMMIT if commit else COMPLETE_ABORT
                    st.offsets = {}
                    await self._save(st)
        except asyncio.CancelledError:
            raise
        except TxnError:
            raise
        except Exception as e:  # the next InitProducerId or EndTxn starts it again
            log.warning("finishing transaction %s failed: %s", st.tid, e)
            raise TxnError(E.COORDINATOR_NOT_AVAILABLE, str(e)) from e
        finally:
            if self._finishing.get(st.tid) is asyncio.current_task():
                del self._finishing[st.tid]

    async def _send_markers(self, st: TxnState, commit: bool) -> None:
        """Every partition's and group's marker, each to the broker serving it, until all
        are in (retried while a leader moves); TxnError NOT_COORDINATOR if this broker
        stops coordinating the id meanwhile (the new coordinator finishes)."""
        b = self.broker
        cepoch = self.coordinator_epoch(st.tid)
        parts = {(t, p) for t, p in st.partitions}
        groups = {partition_of(g) for g in st.groups}
        if st.offsets and commit:  # (a row written before 0020 staged them here)
            for group, rows in st.offsets.items():
                if rows:
                    await self._commit_staged(group, rows)
        delay = 0.02
        while parts or groups:
            if self.states.get(st.tid) is not st:
                raise TxnError(E.NOT_COORDINATOR, "another broker coordinates this id now")
            remote: dict[int, dict[str, list[int]]] = {}
            for topic, p in sorted(parts):
                if b.topics.get(topic) is None:
                    parts.discard((topic, p))  # deleted: nothing to mark
                    continue
                try:
                    node = await b.cluster.stream_leader(b.stream(topic, p))
                except StreamNotFound:  # (a partition never written: made now)
                    node = None
                    t = b.topics.get(topic)
                    if t is not None:
                        await b.topics.ensure_partition(t, p)
                except S2Error:
                    node = None
                if node == b.cluster.node_id:
                    code = await self.marker_code(self.write_marker(
                        topic, p, st.pid, st.epoch, commit, cepoch))
                    if code in (E.NONE, E.UNKNOWN_TOPIC_OR_PARTITION, E.INVALID_PRODUCER_EPOCH):
                        parts.discard((topic, p))  # (the last: a newer epoch wrote there)
                    elif code == E.TRANSACTION_COORDINATOR_FENCED:
                        raise TxnError(code, "a newer coordinator wrote this partition")
                elif node is not None:
                    remote.setdefault(node, {}).setdefault(topic, []).append(p)
            for index in sorted(groups):
                node = await self.groups.coordinator_of_partition(index)
                if node == b.cluster.node_id:
                    await self.groups_marker(index, st.pid, commit)
                    groups.discard(index)
                elif node is not None:
                    remote.setdefault(node, {}).setdefault(GROUPS_TOPIC, []).append(index)
            for node, topics in remote.items():
                done = await b.interbroker.write_markers(node, st.pid, st.epoch, commit,
                                                         cepoch, topics)
                for topic, p, code in done:
                    if code == E.TRANSACTION_COORDINATOR_FENCED:
                        raise TxnError(code, "a newer coordinator wrote this partition")
                    if code in (E.NONE, E.UNKNOWN_TOPIC_OR_PARTITION,
                                E.INVALID_PRODUCER_EPOCH):
                        (groups.discard(p) if topic == GROUPS_TOPIC
                         else parts.discard((topic, p)))
            if parts or groups:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # ------------------------------------------------------------------ group offsets

    async def _txn_view(self, tid: str) -> TxnState | None:
        """The state of `tid`: this broker's if it coordinates it, else its row as now."""
        if self.here(tid):
            return self.states.get(tid)
        row = await self.metadata.get(_TXN + tid)
        return TxnState.from_row(tid, row.value, row.version) if row is not None else None

    async def stage_offsets(self, tid: str, pid: int, epoch: int, group: str,
                            rows: list[list], fenced: int) -> None:
        """TxnOffsetCommit (at the group's coordinator): offsets applied to `group` when
        the transaction's commit marker for it comes."""
        st = await self._txn_view(tid)
        if st is None or st.pid != pid:
            raise TxnError(E.INVALID_PRODUCER_ID_MAPPING,
                           "the producer id is not that of this transactional id")
        if epoch != st.epoch:
            raise TxnError(fenced, f"producer epoch {epoch} is not the current {st.epoch}")
        if st.state in (PREPARE_COMMIT, PREPARE_ABORT):
            raise TxnError(E.CONCURRENT_TRANSACTIONS, "the transaction is ending")
        if st.state != ONGOING or group not in st.groups:
            raise TxnError(E.INVALID_TXN_STATE,
                           f"group {group!r} was not added to the transaction")
        async with self._lock(f"\0{group}"):
            entry = self.staged.setdefault(group, {}).get(pid)
            staged = {(r[0], r[1]): r for r in entry[0]} if entry else {}
            for r in rows:
                staged[(r[0], r[1])] = r
            now = self._now()
            value = json.dumps({"rows": list(staged.values()), "ms": now}).encode()
            key = f"{_STAGED}{group}/{pid}"
            version = await (self.metadata.put(key, value, entry[1]) if entry
                             else self.metadata.create(key, value))
            self.staged.setdefault(group, {})[pid] = [list(staged.values()), version, now]

    async def groups_marker(self, index: int, pid: int, commit: bool) -> None:
        """A transaction of `pid` ended: the offsets it staged for the groups of journal
        partition `index` are applied (commit) or dropped."""
        for group in [g for g, s in self.staged.items()
                      if pid in s and partition_of(g) == index]:
            async with self._lock(f"\0{group}"):
                entry = self.staged.get(group, {}).get(pid)
                if entry is None:
                    continue
                if commit:
                    await self._commit_staged(group, entry[0])
                await self._drop_staged(group, pid, entry[1])

    async def _commit_staged(self, group: str, rows: list[list]) -> None:
        """Commit a transaction's staged offsets ([topic, p, offset, epoch, metadata])."""
        now = self._now()
        await self.groups.commit(group, [[t, p, off, ep, meta, now]
                                         for t, p, off, ep, meta in rows])

    async def _drop_staged(self, group: str, pid: int, version: int) -> None:
        try:
            await self.metadata.delete(f"{_STAGED}{group}/{pid}", version)
        except VersionMismatch:
            pass
        by_pid = self.staged.get(group, {})
        by_pid.pop(pid, None)
        if not by_pid:
            self.staged.pop(group, None)

    def pending_offsets(self, group: str) -> set[tuple[str, int]]:
        """Partitions of `group` with offsets staged by an open transaction."""
        return {(r[0], r[1]) for rows, _, _ in self.staged.get(group, {}).values()
                for r in rows}

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
                                       d["aborted"], row.version,
                                       {int(k): v for k, v in d.get("cepochs", {}).items()})
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
        try:
            if pt.version == 0:
                pt.version = await self.metadata.create(key, pt.to_json())
            else:
                pt.version = await self.metadata.put(key, pt.to_json(), pt.version)
        except VersionMismatch:  # (written by an earlier leader meanwhile: read it again)
            if self.parts.get((topic, p)) is pt:
                del self.parts[(topic, p)]
            raise

    def _plock(self, topic: str, p: int) -> asyncio.Lock:
        lock = self._part_locks.get((topic, p))
        if lock is None:
            lock = self._part_locks[(topic, p)] = asyncio.Lock()
        return lock

    async def _producer_txn(self, pid: int) -> TxnState | None:
        """The transaction state of producer id `pid`, wherever it is coordinated."""
        tid = self.by_pid.get(pid)
        if tid is not None and tid in self.states:
            return self.states[tid]
        tid = self._tids.get(pid)
        if tid is None:
            row = await self.metadata.get(f"{_PID}{pid}")
            if row is None:
                return None
            tid = self._tids[pid] = row.value.decode()
        st = await self._txn_view(tid)
        return st if st is not None and st.pid == pid else None

    async def before_produce(self, topic: str, p: int, pid: int, epoch: int,
                             fenced: int) -> None:
        """A transactional batch of `pid` is about to be appended to the partition."""
        pt = await self.partition(topic, p)
        local = self.by_pid.get(pid) in self.states
        if not local and pid in pt.ongoing and self._verified.get((topic, p, pid)) == epoch:
            return  # checked with its coordinator's row at its first batch here
        st = await self._producer_txn(pid)
        if st is None:
            raise TxnError(E.INVALID_PRODUCER_ID_MAPPING,
                           "no transactional id has this producer id")
        if epoch != st.epoch:
            raise TxnError(fenced, f"producer epoch {epoch} is not the current {st.epoch}")
        if st.state != ONGOING or [topic, p] not in st.partitions:
            raise TxnError(E.INVALID_TXN_STATE,
                           f"partition {topic}-{p} was not added to the transaction")
        if not local:
            self._verified[(topic, p, pid)] = epoch
        if pid in pt.ongoing:
            return
        async with self._plock(topic, p):
            if pid not in pt.ongoing:
                _, hw = await self.broker.partition_bounds(topic, p)
                pt.ongoing[pid] = hw
                await self._save_partition(topic, p, pt)

    @staticmethod
    async def marker_code(call) -> int:
        """The Kafka error code of a marker write (awaited here)."""
        try:
            await call
        except TxnError as e:
            return e.code
        except NotServed:
            return E.NOT_LEADER_OR_FOLLOWER
        except (S2Error, VersionMismatch):
            return E.UNKNOWN_SERVER_ERROR  # (retried by the coordinator)
        return E.NONE

    async def write_marker(self, topic: str, p: int, pid: int, epoch: int,
                           commit: bool, cepoch: int) -> None:
        """A COMMIT or ABORT marker of `pid` into a partition this broker leads."""
        b = self.broker
        if b.topics.get(topic) is None:
            raise TxnError(E.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {topic!r}")
        pt = await self.partition(topic, p)
        # (-1: an administrator's abort of a hanging transaction, KIP-664, which Kafka's
        # leader takes whatever coordinator wrote last)
        if cepoch != -1 and cepoch < pt.cepochs.get(pid, -1):
            raise TxnError(E.TRANSACTION_COORDINATOR_FENCED,
                           f"coordinator epoch {cepoch} is older than "
                           f"{pt.cepochs[pid]}")
        entry = b.producers.partitions.get((topic, p), {}).get(pid)  # (as produce left it)
        if entry is not None and epoch < entry.epoch:
            raise TxnError(E.INVALID_PRODUCER_EPOCH,
                           f"producer epoch {epoch} is older than {entry.epoch}")
        now = self._now()
        body = bytes(build_control_batch(commit=commit, producer_id=pid, producer_epoch=epoch,
                                         coordinator_epoch=cepoch, offset=0, timestamp=now))
        try:
            ack = await b.store.append(b.basin, b.stream(topic, p),
                                       [AppendRecord(body=body, timestamp=now, span=1)])
        except NotServed:
            raise
        except S2Error:
            if b.topics.get(topic) is None:  # deleted meanwhile: nothing to mark
                return
            raise
        marker = ack.start.seq_num
        async with self._plock(topic, p):
            first = pt.ongoing.pop(pid, None)
            pt.cepochs[pid] = max(cepoch, pt.cepochs.get(pid, -1))
            self._verified.pop((topic, p, pid), None)
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

    def forget_partition(self, topic: str, p: int) -> None:
        """The partition moved (broker/reassign.py): its row is read again when needed."""
        self.parts.pop((topic, p), None)
        for key in [k for k in self._verified if k[:2] == (topic, p)]:
            del self._verified[key]

    def forget_topic(self, topic: str) -> None:
        for key in [k for k in self.parts if k[0] == topic]:
            del self.parts[key]

    def describe(self, tid: str) -> TxnState | None:
        return self.states.get(tid)
