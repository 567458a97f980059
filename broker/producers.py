"""Idempotent producers: producer ids, epochs and per-partition sequence dedupe.

Kafka keeps, per producer and partition, the last five batches' sequence ranges and offsets:
a retried batch that matches one of them gets its original offset back instead of being
written twice; any other sequence must follow the last one exactly. The state is rebuilt
after a restart from the batch headers at the tail of each partition (they carry producer
id, epoch and base sequence), the first time a producer writes to a partition. A producer's
state in a partition is dropped once it has written nothing there for
`producer_id_expiration_ms` (Kafka's producer.id.expiration.ms, one day by default), so that
short-lived producers (one per job or function call) do not pile up in memory. Idle time is
counted from when its last batch arrived (Kafka counts from the batch's timestamp, so a
producer replaying old CreateTimes loses its state while it still writes, and with it the
dedupe of its retries); state rebuilt after a restart counts from the rebuild. A producer
that comes back after that is unknown, and its next batch is taken whatever its sequence
number, as Kafka takes it.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.protocol.errors import ErrorCode
from broker.protocol.exceptions import DecodeError
from broker.protocol.records import parse_batch_header
from s2core.metadata.base import VersionMismatch

if TYPE_CHECKING:
    from broker.kafka import Broker

log = logging.getLogger(__name__)

MAX_CACHED_BATCHES = 5
ID_BLOCK = 1000
_REBUILD_SEQS = 20_000


@dataclass(slots=True)
class BatchRecord:
    """A batch this producer wrote: its sequence range and where it landed."""

    first_seq: int
    last_seq: int
    offset: int
    done: asyncio.Future | None = None  # resolves when the batch is durable


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque = field(default_factory=lambda: deque(maxlen=MAX_CACHED_BATCHES))
    last_ms: int = 0  # broker time its last batch here arrived (what expiry is judged by)


class ProducerError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ProducerRegistry:
    """Producer id allocation and per-partition sequence state."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._next_id = 0
        self._block_end = 0
        self._alloc_lock = asyncio.Lock()
        self.partitions: dict[tuple[str, int], dict[int, ProducerEntry]] = {}
        self._rebuilt: set[tuple[str, int]] = set()

    async def allocate_id(self) -> int:
        async with self._alloc_lock:
            if self._next_id >= self._block_end:
                await self._reserve_block()
            pid = self._next_id
            self._next_id += 1
            return pid

    async def _reserve_block(self) -> None:
        md = self.broker.store.metadata
        key = "kafka/producer-ids"
        while True:
            row = await md.get(key)
            start = 0 if row is None else json.loads(row.value)["next"]
            value = json.dumps({"next": start + ID_BLOCK}).encode()
            try:
                if row is None:
                    await md.create(key, value)
                else:
                    await md.put(key, value, row.version)
            except VersionMismatch:
                continue
            self._next_id, self._block_end = start, start + ID_BLOCK
            return

    async def state(self, topic: str, partition: int) -> dict[int, ProducerEntry]:
        key = (topic, partition)
        st = self.partitions.get(key)
        if st is None:
            st = self.partitions[key] = {}
            if key not in self._rebuilt:
                self._rebuilt.add(key)
                await self._rebuild(topic, partition, st)
        return st

    async def _rebuild(self, topic: str, partition: int, st: dict[int, ProducerEntry]) -> None:
        """Recover producer state from the batch headers at the tail of the partition."""
        b = self.broker
        name = b.stream(topic, partition)
        now = b.store.clock.now_ms()
        try:
            batch = await b.store.read(b.basin, name, tail_offset=_REBUILD_SEQS,
                                       count=100_000, max_bytes=256 * 1024 * 1024)
        except Exception:  # noqa: BLE001 - no history: start empty
            return
        for rec in batch.records:
            if rec.is_command():
                continue
            try:
                h = parse_batch_header(rec.body)
            except DecodeError:
                continue
            if h.producer_id < 0 or h.is_control:  # (markers carry no sequence)
                continue
            entry = st.get(h.producer_id)
            if entry is None or h.producer_epoch > entry.epoch:
                entry = st[h.producer_id] = ProducerEntry(h.producer_epoch)
            entry.batches.append(BatchRecord(h.base_sequence,
                                             h.base_sequence + h.last_offset_delta,
                                             rec.seq_num))
            entry.last_ms = now

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        """Drop the state of producers idle in a partition for `expiration_ms` or more (not
        those with a batch still being written); returns how many were dropped. A partition
        left without producers is not rebuilt from its tail again: they expired."""
        dropped = 0
        for key in list(self.partitions):
            st = self.partitions[key]
            for pid in [pid for pid, e in st.items() if now_ms - e.last_ms >= expiration_ms
                        and all(b.done is None or b.done.done() for b in e.batches)]:
                del st[pid]
                dropped += 1
            if not st:
                del self.partitions[key]
        return dropped

    async def run_expiry(self, stop: asyncio.Event, expiration_ms: int) -> None:
        """Expire idle producers every tenth of the expiration (at most every 10 minutes,
        Kafka's producer.id.expiration.check.interval.ms) until `stop` is set."""
        interval = min(600.0, max(expiration_ms / 10_000, 0.01))
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
            n = self.expire(self.broker.store.clock.now_ms(), expiration_ms)
            if n:
                log.info("expired the state of %d idle producer(s)", n)

    def forget_topic(self, topic: str) -> None:
        for key in [k for k in self.partitions if k[0] == topic]:
            self.forget(*key)

    def forget(self, topic: str, partition: int) -> None:
        """Drop one partition's state (rebuilt from its stream when next needed: it moved)."""
        self.partitions.pop((topic, partition), None)
        self._rebuilt.discard((topic, partition))

    def forget_all(self) -> None:
        """Drop every partition's state: it is rebuilt from its stream when next needed
        (the partitions this broker leads changed)."""
        self.partitions.clear()
        self._rebuilt.clear()


def check_sequence(st: dict[int, ProducerEntry], pid: int, epoch: int, first_seq: int,
                   last_seq: int) -> BatchRecord | None:
    """Return the cached batch if this one is a duplicate, None if it is the next in line;
    raise ProducerError otherwise (Kafka's rules)."""
    entry = st.get(pid)
    if entry is None:
        return None
    if epoch < entry.epoch:
        raise ProducerError(ErrorCode.INVALID_PRODUCER_EPOCH,
                            f"producer epoch {epoch} is older than {entry.epoch}")
    if epoch > entry.epoch:
        if first_seq != 0:
            raise ProducerError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                f"a new epoch must start at sequence 0, got {first_seq}")
        return None
    for b in entry.batches:
        if b.first_seq == first_seq and b.last_seq == last_seq:
            return b
    if entry.batches:
        expected = (entry.batches[-1].last_seq + 1) & 0x7FFFFFFF
        if first_seq != expected:
            raise ProducerError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                f"expected sequence {expected}, got {first_seq}")
    return None


def record_batch(st: dict[int, ProducerEntry], pid: int, epoch: int, rec: BatchRecord,
                 timestamp_ms: int) -> None:
    entry = st.get(pid)
    if entry is None or epoch > entry.epoch:
        entry = st[pid] = ProducerEntry(epoch)
    entry.batches.append(rec)
    entry.last_ms = max(entry.last_ms, timestamp_ms)
