"""Kafka log compaction (`cleanup.policy=compact`) on s2core streams.

Kafka's log cleaner, on a partition's closed segments: our closed segments are its offloaded
sections (the part still only in the WAL is the active segment, never cleaned). A pass
over a partition whose dirty part is due:

1. The cleanable part is the sections whose newest record is older than
   `min.compaction.lag.ms`. The dirty part is what lies past the partition's cleaner
   checkpoint. It is due once it is at least `min.cleanable.dirty.ratio` of the
   cleanable bytes, or once its oldest section's newest record is older than
   `max.compaction.lag.ms`.
2. The offset map: key -> offset of its last record in the dirty part, read in order
   until the map reaches `kafka.log_cleaner_dedupe_buffer_bytes` (estimated per entry)
   or the end of the cleanable part. The checkpoint moves to where the map stopped.
3. Every batch of the cleanable part is rewritten, records kept as Kafka's cleaner keeps
   them (`shouldRetainRecord`):
   - a record past the map's end stays;
   - a record without a key goes;
   - a record whose key has a later offset in the map goes;
   - a tombstone (null value) goes once its batch's timestamp is older than
     `delete.retention.ms`. Kafka keeps the legacy rule too: it measures from the
     segment's last modification, or since KIP-534 from when the cleaner first saw it.
   A rewritten batch keeps its base offset, last offset delta and producer fields
   (`filter_batch`), so offsets never move; a batch left with no record goes, leaving
   a gap in the offsets that consumers step over. The exception, as in Kafka: an
   idempotent producer's last batch in the partition, if it lies in the last
   `_REBUILD_SEQS` offsets, from which a restarted broker rebuilds the producer's
   sequence. Kafka keeps it as an empty batch, which not every client steps over; we
   keep it whole (compaction promises the last value of each key, not only it).
   The rewritten sections replace the old ones in the catalog (`rewrite_offloaded`).

Transactions (broker/transactions.py): nothing at or past the last stable offset is
cleaned (an open transaction may still abort); records of aborted transactions are
neither counted in the map nor kept; a transaction marker (control batch) goes once
its transaction has no record left and its timestamp is older than delete.retention.ms,
as Kafka drops it.
Offsets, the log start offset and the high watermark never move; only the records between
them thin out.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.producers import _REBUILD_SEQS
from broker.protocol.exceptions import DecodeError
from broker.protocol.records import filter_batch, iter_records, parse_batch_header
from s2core.clock import Slices
from s2core.errors import NotServed, S2Error, StreamNotFound
from s2core.metadata.base import VersionMismatch

if TYPE_CHECKING:
    from broker.kafka import Broker
    from broker.topics import Topic
    from s2core.records import SequencedRecord

log = logging.getLogger(__name__)

_ENTRY_BYTES = 100  # an offset map entry's cost beyond its key (dict slot, int, bytes object)
_READ_RECORDS = 1000
_READ_BYTES = 4 * 1024 * 1024


def checkpoint_key(topic: Topic, partition: int) -> str:
    """Metadata row of a partition's cleaner checkpoint (by topic id: a topic deleted and
    created again starts from nothing)."""
    return f"kafka/cleaner/{topic.id.hex()}/{partition}"


@dataclass
class CleanResult:
    """What one clean of one partition did."""

    cleaned_upto: int  # the new checkpoint: the end of the offset map
    keys: int  # in the offset map
    records_mapped: int  # records read into the map
    batches_dropped: int  # left with no record
    batches_rewritten: int  # left with fewer records
    bytes_before: int  # of the sections that were rewritten
    bytes_after: int


class LogCleaner:
    """Cleans the compacted partitions this broker serves."""

    def __init__(self, broker: Broker, dedupe_buffer_bytes: int = 128 * 1024 * 1024,
                 group_bytes: int = 8 * 1024 * 1024) -> None:
        self.broker = broker
        self.dedupe_buffer_bytes = dedupe_buffer_bytes
        self.group_bytes = group_bytes

    async def clean_pass(self) -> int:
        """One pass over every compacted partition; returns how many were cleaned."""
        cleaned = 0
        for topic in list(self.broker.topics.topics.values()):
            if "compact" not in topic.config("cleanup.policy").split(","):
                continue
            for p in range(topic.partitions):
                try:
                    if await self.clean(topic, p) is not None:
                        cleaned += 1
                except (StreamNotFound, NotServed):  # (another broker's: its job)
                    continue
                except (S2Error, VersionMismatch) as e:
                    log.warning("cleaning %s-%d failed: %s", topic.name, p, e)
        return cleaned

    async def clean(self, topic: Topic, partition: int,
                    force: bool = False) -> CleanResult | None:
        """Clean one partition if its dirty part is due (or `force`); None if nothing
        was done."""
        b = self.broker
        name = b.stream(topic.name, partition)
        store = b.store
        sections = await store.offloaded_sections(b.basin, name)
        if not sections:
            return None
        now = store.clock.now_ms()
        min_lag = int(topic.config("min.compaction.lag.ms"))
        # nothing at or past the last stable offset: an open transaction's records may
        # still be aborted (broker/transactions.py)
        txns = b.extensions["txn"]
        pt = await txns.partition(topic.name, partition)
        stable = txns.last_stable(topic.name, partition, sections[-1][1])
        upto = None
        for _, end, newest, _ in sections:
            if newest > now - min_lag or end > stable:
                break
            upto = end
        if upto is None:
            return None
        key = checkpoint_key(topic, partition)
        row = await store.metadata.get(key)
        saved = json.loads(row.value) if row is not None else {"upto": 0}
        ck = saved["upto"]
        clean_bytes = sum(n for _, end, _, n in sections if end <= ck)
        dirty = [(first, end, newest, n) for first, end, newest, n in sections
                 if ck < end <= upto]
        dirty_bytes = sum(s[3] for s in dirty)
        tombstones_due = saved.get("tombstones_due", now + 1) <= now
        if dirty:
            ratio = dirty_bytes / (clean_bytes + dirty_bytes)
            due = (ratio >= float(topic.config("min.cleanable.dirty.ratio"))
                   or dirty[0][2] < now - int(topic.config("max.compaction.lag.ms")))
        else:
            due = False
        if not (due or force or tombstones_due):
            return None
        slices = Slices(store.clock, quiet=store.quiet)  # (rests only while appends come)
        if dirty:
            offsets, map_end, read = await self._offset_map(
                name, max(ck, dirty[0][0]), upto, slices, pt.aborted)
        else:  # only tombstones to remove (or forced): the map is empty
            offsets, map_end, read = {}, ck, 0
        retention = int(topic.config("delete.retention.ms"))
        tail = (await store.check_tail(b.basin, name)).seq_num
        producers = await b.producers.state(topic.name, partition)
        protected = {entry.batches[-1].offset for entry in producers.values()
                     if entry.batches and entry.batches[-1].offset >= tail - _REBUILD_SEQS}
        keep = _Keep(offsets, map_end, now - retention, protected, pt.aborted)
        stats = await store.rewrite_offloaded(b.basin, name, upto, keep,
                                              group_bytes=self.group_bytes, tick=slices.tick)
        if stats.conflict:  # (a purge or another cleaner got there first: the next pass)
            return None
        saved = {"upto": max(map_end, ck)}
        if keep.oldest_tombstone is not None:  # a pass then removes it, dirty or not
            saved["tombstones_due"] = keep.oldest_tombstone + retention
        value = json.dumps(saved).encode()
        if row is None:
            await store.metadata.create(key, value)
        else:
            await store.metadata.put(key, value, row.version)
        log.info("cleaned %s-%d up to offset %d: %d keys; of %d batches, %d dropped and %d "
                 "rewritten; %d -> %d bytes", topic.name, partition, map_end, len(offsets),
                 stats.records_read, stats.records_dropped, stats.records_changed,
                 stats.bytes_before, stats.bytes_after)
        return CleanResult(saved["upto"], len(offsets), read, stats.records_dropped,
                           stats.records_changed, stats.bytes_before, stats.bytes_after)

    async def _offset_map(self, name: str, start: int, upto: int, slices: Slices,
                          aborted: list) -> tuple[dict[bytes, int], int, int]:
        """Key -> last offset in [start, upto), whole batches only, until the map is
        full; also where it ended and how many records it read. Records of aborted
        transactions are not counted: they never happened."""
        b = self.broker
        offsets: dict[bytes, int] = {}
        budget = self.dedupe_buffer_bytes
        seq = end = start  # end: where the batches taken in so far end
        read = 0
        while seq < upto:
            batch = await b.store.read(b.basin, name, seq_num=seq, count=_READ_RECORDS,
                                       max_bytes=_READ_BYTES, clamp=True)
            if not batch.records:
                break
            for rec in batch.records:
                if rec.seq_num >= upto:
                    return offsets, upto, read
                if not rec.is_command():
                    try:
                        h = parse_batch_header(rec.body)
                        if h.is_control or _aborted(h, rec.seq_num, aborted):
                            records = []
                        else:
                            records = list(iter_records(rec.body))
                    except DecodeError as e:
                        raise S2Error(f"offset {rec.seq_num}: {e}") from e
                    new = sum(len(r.key) + _ENTRY_BYTES for r in records
                              if r.key is not None and bytes(r.key) not in offsets)
                    if new > budget and end > start:
                        return offsets, end, read  # full: the next pass goes on from here
                    budget -= new
                    for r in records:
                        if r.key is not None:
                            offsets[bytes(r.key)] = rec.seq_num + r.offset - h.base_offset
                    read += len(records)
                seq = end = rec.end_seq
                await slices.tick()
        return offsets, upto, read

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Clean every `interval_s` until `stop` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                try:
                    await self.clean_pass()
                except Exception:
                    log.exception("log cleaner pass failed")


class _Keep:
    """What becomes of each stored batch of the cleanable part (see the module doc)."""

    __slots__ = ("aborted", "horizon", "map_end", "offsets", "oldest_tombstone", "protected",
                 "txn_kept")

    def __init__(self, offsets: dict[bytes, int], map_end: int, horizon: int,
                 protected: set[int], aborted: list | None = None) -> None:
        self.aborted = aborted or []
        self.offsets = offsets
        self.map_end = map_end
        self.horizon = horizon
        self.protected = protected  # offsets of batches never dropped whole
        self.oldest_tombstone: int | None = None  # timestamp of the oldest one kept
        # producer id -> whether a record of its transaction under way (in log order) was
        # kept: a marker whose transaction kept none can go, once delete.retention.ms
        # has passed (Kafka's rule: consumers no longer need it to end that transaction)
        self.txn_kept: dict[int, bool] = {}

    def __call__(self, rec: SequencedRecord) -> SequencedRecord | None:
        if rec.is_command():
            return rec
        h = parse_batch_header(rec.body)
        if h.is_control:
            kept = self.txn_kept.pop(h.producer_id, False)
            if kept or rec.seq_num >= self.map_end or rec.timestamp >= self.horizon:
                return rec
            return None
        out = self._batch(rec, h)
        if h.is_transactional:
            self.txn_kept[h.producer_id] = self.txn_kept.get(h.producer_id, False) or \
                out is not None
        return out

    def _batch(self, rec: SequencedRecord, h) -> SequencedRecord | None:
        if rec.seq_num >= self.map_end:
            return rec
        if _aborted(h, rec.seq_num, self.aborted):
            # an aborted transaction's records go (read_committed consumers never saw
            # them; read_uncommitted ones may, until a clean)
            return rec if rec.seq_num in self.protected else None
        base = rec.seq_num - h.base_offset
        offsets = self.offsets
        map_end = self.map_end
        old_tombstone = rec.timestamp < self.horizon

        def keep(r) -> bool:
            offset = base + r.offset
            if offset >= map_end:
                return True
            if r.key is None:
                return False
            latest = offsets.get(bytes(r.key))
            if latest is not None and offset < latest:
                return False
            if r.value is not None:
                return True
            if old_tombstone:
                return False
            if self.oldest_tombstone is None or rec.timestamp < self.oldest_tombstone:
                self.oldest_tombstone = rec.timestamp
            return True

        body = filter_batch(rec.body, keep)
        if body is rec.body:
            return rec
        if body is None:
            return rec if rec.seq_num in self.protected else None
        return rec._replace(body=bytes(body))


def _aborted(h, offset: int, aborted: list) -> bool:
    """Whether the batch at `offset` belongs to an aborted transaction."""
    if not h.is_transactional:
        return False
    return any(pid == h.producer_id and first <= offset < last
               for pid, first, last in aborted)
