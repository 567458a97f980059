"""The group journal: our `__consumer_offsets`, on s2core streams.

Groups hash onto `PARTITIONS` streams `kafka-internal/offsets/<n>` in the broker's basin.
Every record is one JSON object (see `coordinator.apply` for the kinds). A write is
acknowledged only once the append is durable, and its effect on memory (`apply`) runs in
sequence order, after durability, so readers never see an offset that could be lost.

Compaction: when a stream holds many more records than its live state needs, the journal
writes the live state of that stream's groups as ordinary records (a snapshot) and, once
those are durable, appends an s2core `trim` command below them. Replay reads from the
stream's first seq_num, so restart time follows the live state, not the history.
A crash between snapshot and trim only leaves records that replay to the same state.
"""
from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from s2core.errors import AlreadyExists
from s2core.records import AppendRecord, trim_record
from s2core.store import StreamStore

log = logging.getLogger(__name__)

PARTITIONS = 8
STREAM_PREFIX = "kafka-internal/offsets/"
STREAM_CONFIG = {"retention_policy": {"infinite": {}}}
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 512 * 1024


def partition_of(group_id: str) -> int:
    return zlib.crc32(group_id.encode()) % PARTITIONS


def encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


@dataclass
class _Partition:
    index: int
    stream: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: deque = field(default_factory=deque)
    first_seq: int = 0
    tail: int = 0
    live: int = 0           # live records at the last replay or compaction
    compacting: bool = False
    channel: str = ""       # the channel of its stream, and whether this store serves it
    local: bool = True


@dataclass(eq=False)
class _Pending:
    """A sequenced write: durable when `fut` resolves; `apply` runs after, in order."""

    fut: asyncio.Future
    apply: Callable[[], None] | None
    part: _Partition
    settled: asyncio.Future


class Journal:
    """Durable, ordered group records; `live_records(partition)` feeds snapshots."""

    def __init__(self, store: StreamStore, basin: str,
                 live_records: Callable[[int], list[dict]],
                 compact_slack: int = 1000) -> None:
        self.store = store
        self.basin = basin
        self.live_records = live_records
        self.compact_slack = compact_slack
        self.parts = [_Partition(i, f"{STREAM_PREFIX}{i}") for i in range(PARTITIONS)]
        self._bg: set[asyncio.Task] = set()

    async def replay(self, apply: Callable[[dict], None], place=None) -> int:
        """Create missing streams (on the channel `place(index)` names, if given) and apply
        every stored record of the streams this store serves, in order; returns the
        count. (In a cluster, the other streams are other brokers': see `replay_channel`.)"""
        n = 0
        for part in self.parts:
            try:
                await self.store.create_stream(self.basin, part.stream, STREAM_CONFIG,
                                               channel=place(part.index) if place else None)
            except AlreadyExists:
                pass
            if await self.served(part):
                n += await self._replay(part, apply)
        return n

    async def served(self, part: _Partition) -> bool:
        h = await self.store._handle(self.basin, part.stream)
        part.channel = h.chain[-1]["channel"]
        part.local = part.channel in self.store.channels
        return part.local

    async def replay_channel(self, channel: str, apply: Callable[[dict], None]) -> list[int]:
        """Apply the records of the streams on `channel` (just adopted); their indexes."""
        out = []
        for part in self.parts:
            if part.channel == channel and await self.served(part):
                await self._replay(part, apply)
                out.append(part.index)
        return out

    async def follow(self, part: _Partition, apply: Callable[[dict], None]) -> bool | None:
        """Whether the stream of `part` moved (a balancing move, broker/reassign.py): True if
        it is served here now (replayed first: only then does it count as local), False if
        it went elsewhere, None if nothing changed."""
        h = await self.store._handle(self.basin, part.stream, serve=not part.local)
        channel = h.chain[-1]["channel"]
        local = channel in self.store.channels and h.chain[-1]["sealed_at"] is None
        if local == part.local:
            part.channel = channel
            return None
        part.channel = channel
        if not local:
            part.local = False
            return False
        await self._replay(part, apply)
        part.local = True
        return True

    def release_channel(self, channel: str) -> list[int]:
        """The streams on `channel` are served elsewhere now: their indexes."""
        out = []
        for part in self.parts:
            if part.channel == channel:
                part.local = False
                out.append(part.index)
        return out

    async def _replay(self, part: _Partition, apply: Callable[[dict], None]) -> int:
        n = 0
        seq = part.first_seq = await self.store.first_seq(self.basin, part.stream)
        part.tail = (await self.store.check_tail(self.basin, part.stream)).seq_num
        while seq < part.tail:
            batch = await self.store.read(self.basin, part.stream, seq_num=seq,
                                          count=1000, max_bytes=4 * 1024 * 1024)
            if not batch.records:
                break
            for rec in batch.records:
                if not rec.is_command():
                    try:
                        apply(json.loads(rec.body))
                    except (ValueError, KeyError, TypeError):
                        # not ours (the stream is reachable over the S2 API): skip it
                        log.warning("group journal %s: skipping unreadable record at "
                                    "seq %d", part.stream, rec.seq_num)
                    n += 1
                seq = rec.end_seq
        part.live = len(self.live_records(part.index))
        return n

    async def write(self, group_id: str, records: list[dict],
                    apply: Callable[[], None] | None = None) -> None:
        """Append records of one group atomically; return once durable and applied.

        Raises the store's error if the append failed (then `apply` never runs)."""
        await self.wait(await self.submit(group_id, records, apply))

    async def submit(self, group_id: str, records: list[dict],
                     apply: Callable[[], None] | None = None) -> _Pending:
        """Sequence the records now (in call order); `wait` for durability."""
        part = self.parts[partition_of(group_id)]
        bodies = [AppendRecord(body=encode(r)) for r in records]
        async with part.lock:
            _, fut = await self.store.submit_append(self.basin, part.stream, bodies,
                                                    max_bytes=64 * 1024 * 1024)
            entry = _Pending(fut, apply, part, asyncio.get_running_loop().create_future())
            part.pending.append(entry)
            fut.add_done_callback(lambda _f: self._drain(part))
        return entry

    async def wait(self, entry: _Pending) -> None:
        """Return once `entry` is durable and applied; raise the append's error."""
        await entry.settled
        assert entry.fut.done(), "a write settles once it and every earlier write are done"
        if entry.fut.exception() is not None:
            raise entry.fut.exception()
        self._maybe_compact(entry.part)

    def _drain(self, part: _Partition) -> None:
        """Apply acknowledged writes in sequence order (runs as each append completes)."""
        while part.pending and part.pending[0].fut.done():
            e = part.pending.popleft()
            if not e.fut.cancelled() and e.fut.exception() is None:
                part.tail = max(part.tail, e.fut.result().end.seq_num)
                if e.apply is not None:
                    e.apply()
            e.settled.set_result(None)

    def _maybe_compact(self, part: _Partition) -> None:
        # `live` is as of the last compaction: checking costs nothing per write, and a
        # compaction (O(live)) comes at most every 2 x live + slack records.
        if part.compacting or part.tail - part.first_seq <= 2 * part.live + self.compact_slack:
            return
        part.compacting = True
        t = asyncio.get_running_loop().create_task(self.compact(part.index))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def compact(self, index: int) -> None:
        """Snapshot the live state of one stream's groups, then trim below the snapshot."""
        part = self.parts[index]
        part.compacting = True
        try:
            async with part.lock:
                while part.pending:  # everything sequenced so far is in memory
                    await part.pending[-1].settled
                start = part.tail
                records = self.live_records(index)
                futs = []
                for chunk in _batches(records):
                    _, fut = await self.store.submit_append(
                        self.basin, part.stream, chunk, max_bytes=64 * 1024 * 1024)
                    futs.append(fut)
            for fut in futs:
                await fut
            await self.store.append(self.basin, part.stream, [trim_record(start)])
            part.first_seq = start
            part.live = len(records)
            log.info("group journal %s compacted: %d live records from seq %d",
                     part.stream, len(records), start)
        except Exception:
            log.exception("group journal %s compaction failed", part.stream)
        finally:
            part.compacting = False

    async def close(self) -> None:
        for t in list(self._bg):
            await asyncio.gather(t, return_exceptions=True)


def _batches(records: list[dict]):
    chunk, size = [], 0
    for r in records:
        body = encode(r)
        if chunk and (len(chunk) >= MAX_BATCH_RECORDS or size + len(body) > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(AppendRecord(body=body))
        size += len(body)
    if chunk:
        yield chunk
