"""Offload: turn the oldest durable chunks into segment sections in the object store.

One offload takes a prefix of the channel's in-memory chunks (up to the target size),
gathers each stream's records from them, writes the small streams' sections into one shared
object and big streams' sections into objects of their own, then publishes — in one atomic
metadata batch conditional on the channel lease — the catalog rows, the streams' checkpoints
and the new log floor. Only then are the chunks below the floor deleted, and in-memory
records become evictable.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from s2core.clock import Slices
from s2core.errors import Indeterminate, S2Error, Unavailable
from s2core.metadata.base import Op, VersionMismatch
from s2core.objstore.base import ObjectExists, ObjectStore
from s2core.records import BODY, SEQ, SPAN, TS
from s2core.segment import SectionBuilder
from s2core.sweep import ObjectsInFlight, offload_key
from s2core.sweep import shared_key as shared_object_key

if TYPE_CHECKING:
    from s2core.channel import Channel, MemChunk

log = logging.getLogger(__name__)


def seg_row_key(uid: bytes, first_seq: int) -> str:
    return f"seg/{uid.hex()}/{first_seq:020d}"


class Offloader:
    """The channel's background offload task and its triggers."""

    def __init__(self, channel: Channel, segments: ObjectStore) -> None:
        self.channel = channel
        self.segments = segments
        self.pending_bytes = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._object_n = 0
        # in-memory chunks not offloaded yet, in log order (channel.mem_chunks also keeps
        # the offloaded ones that are still resident: thousands, not walked per offload)
        self.queue: deque[MemChunk] = deque()
        self._queued_streams: dict = {}  # stream state -> queued chunks holding its records
        self._lock = asyncio.Lock()  # one offload at a time: sections must not overlap
        self.catalog_listeners: list = []
        # keys being written, for the orphan sweep (s2core/sweep.py); the store shares one
        self.in_flight = ObjectsInFlight()
        self._noted = 0  # bytes of all chunks noted so far (for the ingest rate)
        self._noted_at = channel.clock.monotonic()  # when the last chunk was noted
        self._noted_wall = time.monotonic()  # (the same, on the clock segment puts pace by)
        self._rate_mark = (channel.clock.monotonic(), 0)
        self._ingest_rate = 0.0  # bytes/s, as of the last pass

    def note_chunk(self, mc: MemChunk) -> None:
        """A chunk became durable (or was recovered) with records in memory."""
        self.queue.append(mc)
        self.pending_bytes += mc.nbytes
        self._noted += mc.nbytes
        self._noted_at = self.channel.clock.monotonic()
        self._noted_wall = time.monotonic()
        streams = self._queued_streams
        for st in mc.ends:
            streams[st] = streams.get(st, 0) + 1
        if self.pending_bytes >= self._batch_bytes():
            self._wake.set()

    def _batch_bytes(self) -> int:
        """What the next offload takes: the target, or more while the waiting bytes are
        spread thin over many streams (each stream costs a section, a catalog row and a
        checkpoint per offload, whatever its size), up to 8 x the target."""
        cfg = self.channel.config
        thin = cfg.offload_min_stream_bytes * len(self._queued_streams)
        return min(max(cfg.offload_target_bytes, thin), 8 * cfg.offload_target_bytes)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        cfg = self.channel.config
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), cfg.offload_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            slices = self._slices()  # one budget for the whole pass
            try:
                while await self.offload_once(slices):
                    await self.evict(slices)  # free memory as soon as a batch is published
                    if self.pending_bytes < self._batch_bytes() and not self._pressure():
                        break
                await self.evict(slices)
            except asyncio.CancelledError:
                raise
            except S2Error as e:
                log.warning("offload of channel %s failed, will retry: %s",
                            self.channel.name, e)
                await self.channel.clock.sleep(0.1)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _pressure(self) -> bool:
        ch = self.channel
        return ch.mem_bytes > ch.config.memory_bound_bytes * ch.config.keep_in_memory_fraction

    def _urgent(self) -> bool:
        """Appends are close to waiting for memory: background work stops resting."""
        ch = self.channel
        bound = ch.config.memory_bound_bytes
        keep = bound * ch.config.keep_in_memory_fraction
        return ch.mem_bytes > (keep + bound) / 2

    def _behind(self) -> bool:
        """More than a batch waits beyond the one being offloaded: rest less."""
        return self.pending_bytes >= 2 * self._batch_bytes()

    def caught_up(self) -> bool:
        """No pass under way and less than a batch waiting."""
        return not self._lock.locked() and self.pending_bytes < self._batch_bytes()

    def quiet(self) -> bool:
        """No chunk for QUIET_S: nothing to leave the loop to, the pass need not rest."""
        return self.channel.clock.monotonic() - self._noted_at > QUIET_S

    def _slices(self) -> Slices:
        return Slices(self.channel.clock, urgent=self._urgent, behind=self._behind,
                      quiet=self.quiet)

    async def offload_once(self, slices: Slices | None = None) -> bool:
        """Offload one batch of chunks; return whether there was anything to do."""
        async with self._lock:
            return await self._offload_once(slices or self._slices())

    async def write_checkpoint(self, st) -> None:
        """Persist a stream's checkpoint now (serialized with offloads, which also write it)."""
        async with self._lock:
            st.ckpt_version = await self.channel.metadata.put(
                f"ckpt/{st.uid.hex()}", st.checkpoint(), st.ckpt_version)

    async def _offload_once(self, slices: Slices) -> bool:
        ch = self.channel
        batch: list[MemChunk] = []
        size = 0
        # behind (the tail is past its keep level): bigger batches amortize each publish
        limit = ch.config.offload_target_bytes * 8 if self._pressure() else \
            self._batch_bytes()
        for mc in self.queue:
            batch.append(mc)
            size += mc.nbytes
            if size >= limit:
                break
        if not batch:
            return False
        ends: dict = {}
        for i, mc in enumerate(batch):
            if not i & 255:
                await slices.tick()
            for st, end in mc.ends.items():
                ends[st] = max(ends.get(st, 0), end)
        todo = []
        for i, (st, end) in enumerate(ends.items()):
            if not i & 31:
                await slices.tick()
            if st.deleted or end <= st.offloaded_upto:
                continue
            recs = st.records_between(st.offloaded_upto, end)
            if recs:
                todo.append((st, end, recs))
        sections = await _build_sections(todo, ch.config.section_max_bytes, slices)
        await slices.free(todo)
        floor = self._floor_after(len(batch))
        # an evicted state object (replaced by a reload) has nothing left to offload
        touched = []
        for i, st in enumerate(ends):
            if not i & 255:
                await slices.tick()
            if not st.deleted and ch.streams.get(st.uid) is st:
                touched.append(st)
        await self._publish(sections, floor, touched, slices)
        await slices.free(sections, touched)
        streams = self._queued_streams
        for i, mc in enumerate(batch):
            if not i & 255:
                await slices.tick()
            mc.offloaded = True
            self.queue.popleft()
            for st in mc.ends:
                left = streams[st] - 1
                if left:
                    streams[st] = left
                else:
                    del streams[st]
        self.pending_bytes = max(0, self.pending_bytes - size)
        await slices.free(batch, ends)
        await ch.log.collect_garbage(slices)
        return True

    def _floor_after(self, n: int):
        """The log floor once the first `n` queued chunks are offloaded: the next one's
        position (chunks are queued in log order)."""
        ch = self.channel
        if n < len(self.queue):
            return self.queue[n].pos
        return (ch.log.epoch, ch.log.next_seq) if not ch._writing else \
            (ch.log.epoch, min(ch._writing))

    async def _publish(self, sections: list, floor, touched: list, slices: Slices) -> None:
        """Write the section objects, then publish catalog rows, checkpoints and the new
        floor in one batch conditional on the lease.

        Every stream with entries in the offloaded chunks (`touched`) gets its checkpoint
        rewritten, even without a section: a command that took no seq_num lives only there
        once its chunk is collected."""
        ch = self.channel
        objects: dict[str, list] = {}
        shared_key = None
        shared_size = 0
        placed = []  # (state, first seq, end seq, first ts, last ts, key, offset, size)
        for i, (st, first, end, first_ts, last_ts, parts, size) in enumerate(sections):
            if not i & 63:
                await slices.tick()  # 10,000 streams: 10,000 sections, rows, checkpoints
            if size >= ch.config.own_segment_bytes:
                self._object_n += 1
                key = offload_key(st.uid.hex(), first, ch.log.epoch, self._object_n,
                                  ch.name)
                objects[key] = list(parts)
                placed.append((st, first, end, first_ts, last_ts, key, 0, size))
                continue
            if shared_key is None:
                self._object_n += 1
                shared_key = shared_object_key(ch.name, ch.log.epoch, ch.log.next_seq,
                                               self._object_n)
                objects[shared_key] = []
            placed.append((st, first, end, first_ts, last_ts, shared_key, shared_size, size))
            objects[shared_key].extend(parts)
            shared_size += size
        # (registered before they are put: the orphan sweep never takes them meanwhile)
        with self.in_flight.writing(objects):
            await self._put_and_publish(objects, placed, floor, touched, slices)

    async def _put_and_publish(self, objects: dict, placed: list, floor, touched: list,
                               slices: Slices) -> None:
        ch = self.channel
        vectored = getattr(self.segments, "accepts_parts", False)
        pace = self._segment_pace() if getattr(self.segments, "paces_writes", False) else None
        if pace is not None:
            pace = self._piece_pace(pace)
        gate = asyncio.Semaphore(PUTS_AT_ONCE)

        async def put(key: str, parts: list) -> None:
            async with gate:
                await self._put(key, parts if vectored else b"".join(parts), pace)
        puts = [asyncio.ensure_future(put(k, p)) for k, p in objects.items()]
        try:
            await asyncio.gather(*puts)
        finally:
            for t in puts:  # a put that failed (or a cancelled pass) stops the others
                t.cancel()
        while True:
            live: dict[str, int] = {}
            stream_end: dict = {st: st.offloaded_upto for st in touched}
            for i, (st, first, end, *_, key, _, _) in enumerate(placed):
                if not i & 255:
                    await slices.tick()
                live[key] = live.get(key, 0) + 1
                stream_end[st] = max(stream_end.get(st, 0), end)
            ops = [Op("put", f"obj/{k}", json.dumps({"live": n}).encode())
                   for k, n in live.items()]
            quoted = {k: json.dumps(k) for k in live}  # rows are JSON: numbers + one key
            for i, (st, first, end, first_ts, last_ts, key, off, size) in enumerate(placed):
                if not i & 63:
                    await slices.tick()
                raw = (f'{{"k": {quoted[key]}, "o": {off}, "n": {size}, "e": {end}, '
                       f'"t0": {first_ts}, "t1": {last_ts}}}')
                ops.append(Op("put", seg_row_key(st.uid, first), raw.encode()))
            ckpt_index = {}
            for i, (st, end) in enumerate(stream_end.items()):
                if not i & 63:
                    await slices.tick()
                ckpt_index[st] = len(ops)
                ops.append(Op("put", f"ckpt/{st.uid.hex()}", st.checkpoint(end),
                              st.ckpt_version))
            # the states move only once the batch is in: a publish that fails (metadata
            # unreachable) is redone whole, sections included, by the next attempt
            try:
                versions = await ch.log.advance_floor(floor, ops)
            except VersionMismatch as e:
                hit = [st for st in touched if f"ckpt/{st.uid.hex()}" == e.key]
                if not hit:
                    raise
                row = await ch.metadata.get(e.key)
                for st in hit:
                    if row is None:  # the stream was deleted meanwhile: drop its sections
                        touched.remove(st)
                        placed = [p for p in placed if p[0] is not st]
                    elif st.sealed and not any(p[0] is st for p in placed):
                        # sealed for a move, which writes the checkpoint itself: nothing of
                        # this stream to publish here (seed 712306 got here with a version
                        # left stale by a lost answer, now settled: metadata.settle)
                        touched.remove(st)
                    else:
                        raise AssertionError(f"checkpoint {e.key} was written behind the "
                                             "offloader's back")
                continue
            for n, (st, i) in enumerate(ckpt_index.items()):
                if not n & 255:
                    await slices.tick()
                st.ckpt_version = versions[i + 1]
                st.offloaded_upto = stream_end[st]
            for i, (st, first, end, first_ts, last_ts, key, off, size) in enumerate(placed):
                if not i & 255:
                    await slices.tick()
                for listener in self.catalog_listeners:  # (the row as JSON would read)
                    listener(st.uid, first, key, off, size, end, first_ts, last_ts)
            await slices.free(ops, placed, objects, ckpt_index, stream_end)
            return

    def _segment_pace(self) -> float | None:
        """How fast this pass writes segments to a local disk (bytes/s; None: at once).

        Segment objects of a few MiB written at full speed filled the disk's write cache
        between two WAL syncs, and the cache flush of each sync then waited for them: on
        the bench machine a WAL sync took twice as long during a segment write (p50 0.55
        against 0.27 ms; p99 1.15 against 0.67 ms). Written at a few times the rate chunks
        come in, the syncs during a segment write are as fast as the others, and offload
        still keeps up with a wide margin. At full speed as soon as appends are close to
        waiting for memory, when more than a batch waits, and when the channel stops; and
        piece by piece while no chunk comes (see _piece_pace)."""
        now = self.channel.clock.monotonic()
        t, noted = self._rate_mark
        if now - t >= 0.1:  # (and a fast burst counts for a while: half of it per pass)
            rate = (self._noted - noted) / (now - t)
            self._ingest_rate = max(rate, self._ingest_rate / 2)
            self._rate_mark = (now, self._noted)
        if self._stopping or self._urgent() or self._behind():
            return None
        return max(PACE_FLOOR, PACE_FACTOR * self._ingest_rate)

    def _piece_pace(self, rate: float):
        """The pace of each piece of a segment put: `rate`, or full speed while no chunk
        came for QUIET_S (no WAL sync to spare). Asked from the put's thread, piece by
        piece, so a put started in a quiet spell slows down as soon as appends resume
        (decided once per put, a put started while the loop was quiet went on at full
        speed into the appends that followed). It reads the wall clock, as the pacing
        does, and a float the loop writes."""
        def pace() -> float | None:
            return None if time.monotonic() - self._noted_wall > QUIET_S else rate
        return pace

    def background_pace(self):
        """The pace for another background write to the segment store (a compaction's),
        as this pass would write a segment now: None (full speed) unless the store paces
        writes (a local disk that the WAL shares)."""
        if not getattr(self.segments, "paces_writes", False):
            return None
        pace = self._segment_pace()
        return None if pace is None else self._piece_pace(pace)

    async def _put(self, key: str, data: bytes, pace=None) -> None:
        delay = 0.01
        kw = {"pace": pace} if pace is not None else {}
        while True:
            try:
                await self.segments.put(key, data, **kw)
                return
            except ObjectExists:
                return
            except (Unavailable, Indeterminate, OSError) as e:
                log.debug("segment put %s failed: %s; retrying", key, e)
            await self.channel.clock.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def evict(self, slices: Slices | None = None) -> None:
        """Free offloaded records, oldest chunk first, down to the keep-in-memory level
        (one eviction at a time: a caller returns once any eviction under way is done)."""
        async with self._lock:
            await self._evict(slices or self._slices())

    async def _evict(self, slices: Slices) -> None:
        ch = self.channel
        keep = ch.config.memory_bound_bytes * ch.config.keep_in_memory_fraction
        while True:  # a few hundred chunks at a time: an offload frees thousands
            freed = seen = 0
            upto: dict = {}
            while ch.mem_chunks and ch.mem_chunks[0].offloaded and \
                    ch.mem_bytes - freed > keep and seen < 1024:
                mc = ch.mem_chunks.popleft()
                for st, end in mc.ends.items():
                    if upto.get(st, -1) < end:
                        upto[st] = end
                seen += len(mc.ends)
                freed += mc.nbytes
            if not freed:
                return
            ch.memory_freed(freed)
            # once per stream and round (a list's front is costly to cut); an idle stream
            # whose records all went to segments needs no state in memory
            for i, (st, end) in enumerate(upto.items()):
                if not i & 63:
                    await slices.tick()
                st.evict_below(min(end, st.offloaded_upto))
                ch.maybe_evict(st)
            await slices.tick()


# Segment objects of one offload written at once: one at a time, a put of several MiB
# (written back 128 KiB at a time, see LocalDirObjectStore) capped offload at the speed of
# one writer, below what Kafka producers append.
PUTS_AT_ONCE = 4
PACE_FACTOR = 3             # segments go to a local disk at 3 x the ingest rate...
PACE_FLOOR = 16 * 2**20     # ...and at 16 MiB/s at least
QUIET_S = 0.02              # no chunk for this long: offload passes stop resting

_RUN = 64  # records encoded between two looks at the clock


async def _build_sections(todo: list, max_bytes: int, slices: Slices) -> list:
    """(state, first seq, end seq, first ts, last ts, parts, size) per section; a stream's
    records are cut into sections of about `max_bytes`, so a read fetches and verifies
    only what it needs.
    A section always holds a record that takes a seq_num, so sections of one stream never
    share a first seq_num; a trailing run of span-0 command records stays in memory for the
    next offload (its effect is in the checkpoint already).
    """
    out = []
    for st, end, recs in todo:  # (recs: tail entries, tuples in SequencedRecord's order)
        i = 0
        while i < len(recs):
            j, size, spans = i, 0, 0
            while j < len(recs) and (spans == 0 or size + len(recs[j][BODY]) <= max_bytes):
                size += len(recs[j][BODY])
                spans += recs[j][SPAN]
                j += 1
                if not j & 1023:
                    await slices.tick()
            if spans == 0:
                break
            builder = SectionBuilder(st.uid)
            for k in range(i, j, _RUN):
                builder.add(recs[k:min(k + _RUN, j)])
                await slices.tick()
            last = recs[j - 1]
            out.append((st, recs[i][SEQ], last[SEQ] + last[SPAN], recs[i][TS], last[TS],
                        builder.finish(), builder.nbytes))
            i = j
        await slices.tick()
    return out
