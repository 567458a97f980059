"""A channel: the diskless serving unit that sequences appends for the streams it owns.

Appends are sequenced here, batched into chunks (group commit: a chunk is sealed when it
reaches the tier's target size or its linger expires, and while the log has its maximum of
chunks in flight the open chunk keeps growing), replicated by the ChunkLog, and published to
the in-memory tail when their chunk is durable. A background offloader turns the oldest
chunks into segment sections, publishes them to the catalog together with the new log
floor in one atomic metadata batch, then garbage-collects the chunks.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from s2core.clock import Clock
from s2core.errors import (
    Backpressure, Closed, FencingTokenMismatch, Indeterminate, S2Error, Sealed, SeqNumMismatch,
    StreamNotFound,
)
from s2core.metadata.base import MetadataStore
from s2core.objstore.base import ObjectStore
from s2core.offload import Offloader
from s2core.recordcodec import encoded_size
from s2core.records import HEADERS, SEQ, SPAN, TS, AppendAck, SequencedRecord, StreamPosition
from s2core.streamstate import StreamState
from s2core.wal.chunk import ChunkBuilder, decode_entries
from s2core.wal.log import ChunkLog, Pos

log = logging.getLogger(__name__)


@dataclass
class ChannelConfig:
    """Tuning of one channel (see config/s2kafka.toml for the meaning of each)."""

    chunk_target_bytes: int = 64 * 1024
    linger_s: float = 0.0
    max_inflight_chunks: int = 0     # 0: auto (see Channel.max_inflight)
    memory_bound_bytes: int = 256 * 1024 * 1024
    keep_in_memory_fraction: float = 0.5
    offload_target_bytes: int = 8 * 1024 * 1024
    offload_interval_s: float = 5.0
    offload_min_stream_bytes: int = 8192
    own_segment_bytes: int = 1024 * 1024
    section_max_bytes: int = 4 * 1024 * 1024
    append_wait_timeout_s: float = 30.0
    idle_read_cache: int = 4096      # idle streams kept loaded after reads (LRU)


def record_size(r: SequencedRecord) -> int:
    return encoded_size(r.headers, r.body) + 64


@dataclass(slots=True)
class _Append:
    state: StreamState
    records: list[tuple]  # tail entries: SequencedRecord's fields in a plain tuple
    commands: list
    future: asyncio.Future


@dataclass
class _OpenChunk:
    builder: ChunkBuilder = field(default_factory=ChunkBuilder)
    appends: list[_Append] = field(default_factory=list)
    nbytes: int = 0


@dataclass(slots=True)
class MemChunk:
    """A durable chunk whose records are (partly) in memory: which streams, up to where."""

    pos: Pos
    nbytes: int
    ends: dict  # StreamState -> end seq of that stream in this chunk
    offloaded: bool = False


class Channel:
    """Sequencer, in-memory tail and offloader for a set of streams."""

    def __init__(self, name: str, log_: ChunkLog, metadata: MetadataStore,
                 segments: ObjectStore, clock: Clock, config: ChannelConfig) -> None:
        self.name = name
        self.log = log_
        self.metadata = metadata
        self.clock = clock
        self.config = config
        self.streams: dict[bytes, StreamState] = {}
        self._loading: dict[bytes, asyncio.Future] = {}
        self._idle_reads: OrderedDict[bytes, StreamState] = OrderedDict()
        self._open: _OpenChunk | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._inflight = 0
        self._writing: dict[int, _OpenChunk] = {}
        self._ready: dict[int, _OpenChunk] = {}
        self._publish_next = 0
        self.mem_chunks: deque[MemChunk] = deque()
        self.mem_bytes = 0
        self._mem_freed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.failed: S2Error | None = None
        self._closing = False
        self.offloader = Offloader(self, segments)
        # Chunks replicated at once. Replicas that group everything queued into one sync
        # (local logs) gain nothing from more than one: chunks sealed while a sync runs
        # would all go into the next sync anyway, as several small chunks (more work per
        # append, more GC) instead of one. Object stores answer each put on its own and
        # take several at once.
        self.max_inflight = config.max_inflight_chunks or (
            1 if all(getattr(r, "groups_writes", False) for r in log_.replicas) else 4)

    # ------------------------------------------------------------- lifecycle

    async def open(self, owns=None) -> None:
        """Recover the log and rebuild the in-memory tail from the chunks above the floor.

        `owns(state)` says whether this channel serves the stream now: entries of streams
        that moved to another channel were offloaded before the move and are skipped."""
        chunks = await self.log.open()
        foreign: set[bytes] = set()
        for ch in chunks:
            ends: dict[StreamState, int] = {}
            nbytes = 0
            for uid, rec in decode_entries(ch.data, ch.header):
                if uid in foreign:
                    continue
                st = await self.state(uid)
                if st is not None and owns is not None and not await owns(st):
                    foreign.add(uid)
                    self.streams.pop(uid, None)
                    continue
                if st is None or rec.seq_num < st.durable_seq:
                    continue  # deleted stream, or already offloaded
                if rec.seq_num != st.durable_seq:
                    raise AssertionError(f"gap in stream {uid.hex()}: {rec.seq_num} after "
                                         f"{st.durable_seq}")
                size = record_size(rec)
                self._apply_commands(st, rec, recovering=True)
                st.publish(tuple(rec))
                st.next_seq, st.last_ts = st.durable_seq, st.durable_ts
                ends[st] = rec.end_seq
                nbytes += size
            self.mem_bytes += nbytes
            mc = MemChunk(ch.pos, nbytes, ends)
            self.mem_chunks.append(mc)
            self.offloader.note_chunk(mc)
        self._spawn(self.offloader.run())

    async def close(self) -> None:
        """Stop taking appends, flush what is open and wait for it to be durable (unless
        the channel failed: its writes will not finish, and their callers were told)."""
        self._closing = True
        if self._open and self._open.appends and self.failed is None:
            self._seal()
        while (self._writing or self._ready) and self.failed is None:
            await asyncio.sleep(0.001)
        await self.offloader.stop()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:  # nothing of this channel runs once it is closed (backends close next)
            await asyncio.wait(tasks, timeout=10)
        await self.log.close()

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("channel %s task failed", self.name, exc_info=t.exception())

    # ----------------------------------------------------------------- state

    async def state(self, uid: bytes) -> StreamState | None:
        """The active state of a stream, loaded from its checkpoint if idle; None if deleted."""
        st = self.streams.get(uid)
        if st is not None:
            return st
        fut = self._loading.get(uid)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._loading[uid] = fut
        try:
            row = await self.metadata.get(f"ckpt/{uid.hex()}")
            if row is None:
                st = None
            else:
                ck = json.loads(row.value)
                st = StreamState(uid, ck["b"], ck["s"], ck, row.version)
                self.streams[uid] = st
            fut.set_result(st)
            return st
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()
            raise
        finally:
            del self._loading[uid]

    def forget(self, uid: bytes) -> None:
        """Drop a deleted (or moved-away) stream's state."""
        self._idle_reads.pop(uid, None)
        st = self.streams.pop(uid, None)
        if st is not None:
            st.deleted = True
            st.wake()

    def maybe_evict(self, st: StreamState) -> None:
        if st.is_idle() and self.streams.get(st.uid) is st:
            del self.streams[st.uid]

    def note_read(self, st: StreamState) -> None:
        """A read used `st`. Idle states loaded only for reads are kept for the most recent
        `idle_read_cache` streams and evicted beyond that (appends and offload are what
        evict the others), so reading a million idle streams does not keep them resident."""
        if not st.is_idle():
            return
        lru = self._idle_reads
        lru[st.uid] = st
        lru.move_to_end(st.uid)
        while len(lru) > self.config.idle_read_cache:
            _, old = lru.popitem(last=False)
            self.maybe_evict(old)

    # ---------------------------------------------------------------- append

    async def append(self, uid: bytes, name: str, records: list, commands: list,
                     match_seq_num: int | None, fencing_token: str | None,
                     timestamps: list[int]) -> AppendAck:
        """Sequence and durably append `records` (already validated) to stream `uid`."""
        _, fut = await self.submit(uid, name, records, commands, match_seq_num,
                                   fencing_token, timestamps)
        return await fut

    async def submit(self, uid: bytes, name: str, records: list, commands: list,
                     match_seq_num: int | None, fencing_token: str | None,
                     timestamps: list[int]) -> tuple[int, asyncio.Future]:
        """Sequence `records`; return their first seq_num and a future of the durable ack.

        Callers that must keep an order between appends (a Kafka producer's pipelined
        batches) submit them one after another and await the futures concurrently."""
        if self.failed:
            raise self.failed
        if self._closing:
            raise Closed("channel is shutting down")
        if len(records) == 1:  # (the usual case: a Kafka batch is one record)
            size = encoded_size(records[0].headers, records[0].body) + 64
        else:
            size = sum(encoded_size(r.headers, r.body) + 64 for r in records)
        if self.mem_bytes + size > self.config.memory_bound_bytes:
            await self._wait_for_memory(size)
        # Look the state up only now, and sequence without awaiting: an idle state may be
        # evicted (and later reloaded as a new object) while an append waits above.
        st = await self.state(uid)
        if st is None or st.deleted:
            raise StreamNotFound(f"stream {name!r} was deleted")
        if st.sealed:
            raise Sealed(f"stream {name!r} is sealed for a move; retry")
        if fencing_token is not None and fencing_token != st.token:
            raise FencingTokenMismatch(fencing_token, st.token)
        if match_seq_num is not None and match_seq_num != st.next_seq:
            raise SeqNumMismatch(match_seq_num, st.next_seq)
        oc = self._open
        if oc is None:
            oc = self._open = _OpenChunk()
        uid = st.uid
        seqd: list[tuple] = []
        for r, cmd, ts in zip(records, commands, timestamps):
            ts = max(ts, st.last_ts)
            st.last_ts = ts
            seq = st.next_seq
            # A memoryview body (a Kafka batch in its request frame) is kept as a view: the
            # frame is never reused, so holding it costs no copy and no extra memory.
            body = r.body if type(r.body) in (bytes, memoryview) else bytes(r.body)
            headers = tuple((bytes(n), bytes(v)) for n, v in r.headers) if r.headers else ()
            rec = (seq, ts, headers, body, r.span)  # a tail entry (see StreamState.mem_recs)
            st.next_seq += r.span
            if cmd is not None and cmd[0] == "fence":
                st.token = cmd[1]
            oc.builder.add(uid, seq, r.span, ts, headers, body)
            seqd.append(rec)
        fut = asyncio.get_running_loop().create_future()
        st.pending += 1
        oc.appends.append(_Append(st, seqd, commands, fut))
        oc.nbytes += size
        self.mem_bytes += size
        self._schedule_seal(oc)
        return seqd[0][SEQ], fut

    async def _wait_for_memory(self, size: int) -> None:
        deadline = self.clock.monotonic() + self.config.append_wait_timeout_s
        self.offloader.wake()
        while self.mem_bytes + size > self.config.memory_bound_bytes:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise Backpressure(f"in-memory tail of channel {self.name} is full and offload "
                                   f"did not free space within "
                                   f"{self.config.append_wait_timeout_s}s")
            self._mem_freed.clear()
            try:
                await asyncio.wait_for(self._mem_freed.wait(), left)
            except TimeoutError:
                pass

    def _schedule_seal(self, oc: _OpenChunk) -> None:
        if self._inflight >= self.max_inflight:
            return  # sealed when a slot frees; the open chunk keeps growing meanwhile
        if oc.nbytes >= self.config.chunk_target_bytes:
            self._seal()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.config.linger_s,
                                                                 self._on_linger)

    def _on_linger(self) -> None:
        self._linger = None
        if self._open and self._open.appends and self._inflight < self.max_inflight:
            self._seal()

    def _seal(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        oc, self._open = self._open, None
        assert oc is not None and oc.appends
        seq = self.log.new_chunk_seq()
        self._inflight += 1
        self._writing[seq] = oc
        self._spawn(self._write(seq, oc))

    async def _write(self, seq: int, oc: _OpenChunk) -> None:
        try:
            await self.log.write(oc.builder, seq)
        except BaseException as e:
            self._fail(e)
            raise
        finally:
            self._inflight -= 1
        self._ready[seq] = self._writing.pop(seq)
        while self._publish_next in self._ready:
            self._publish(self._publish_next, self._ready.pop(self._publish_next))
            self._publish_next += 1
        if self._open and self._open.appends:
            if self._open.nbytes >= self.config.chunk_target_bytes or self._linger is None:
                self._seal()

    def _publish(self, seq: int, oc: _OpenChunk) -> None:
        ends: dict[StreamState, int] = {}
        for ap in oc.appends:
            st = ap.state
            st.pending -= 1
            for rec in ap.records:
                if rec[HEADERS]:  # (a command record has one header)
                    self._apply_commands(st, SequencedRecord._make(rec), recovering=False)
                st.publish(rec)
            ends[st] = st.durable_seq
            first, last = ap.records[0], ap.records[-1]
            if not ap.future.done():
                ap.future.set_result(AppendAck(
                    StreamPosition(first[SEQ], first[TS]),
                    StreamPosition(last[SEQ] + last[SPAN], last[TS]),
                    StreamPosition(st.durable_seq, st.durable_ts)))
            st.wake()
        mc = MemChunk((self.log.epoch, seq), oc.nbytes, ends)
        self.mem_chunks.append(mc)
        self.offloader.note_chunk(mc)

    @staticmethod
    def _apply_commands(st: StreamState, rec: SequencedRecord, recovering: bool) -> None:
        """Apply a durable command record. A live fence already moved the token when it
        was sequenced (later appends in the pipeline are checked against it)."""
        if rec.is_command():
            op = rec.headers[0][1]
            if op == b"trim":
                st.trim_seq = max(st.trim_seq, min(int.from_bytes(rec.body, "big"),
                                                   rec.end_seq))
            elif op == b"fence":
                st.durable_token = rec.body.decode()
                if recovering:
                    st.token = st.durable_token

    def _fail(self, e: BaseException) -> None:
        if self.failed is None:
            self.failed = e if isinstance(e, S2Error) else Indeterminate(str(e))
            log.error("channel %s failed: %r", self.name, e)
        err = Indeterminate(f"append outcome unknown: channel {self.name} failed: {e!r}")
        chunks = list(self._writing.values()) + list(self._ready.values())
        if self._open:
            chunks.append(self._open)
        for oc in chunks:
            for ap in oc.appends:
                if not ap.future.done():
                    ap.future.set_exception(err)

    def memory_freed(self, nbytes: int) -> None:
        self.mem_bytes -= nbytes
        self._mem_freed.set()

    # ------------------------------------------------------------------ misc

    async def seal(self, st: StreamState) -> StreamPosition:
        """Stop appends to `st` and wait until everything sequenced is durable."""
        st.sealed = True
        while (st.pending or st.durable_seq != st.next_seq) and not self.failed:
            await asyncio.sleep(0.001)
        if self.failed:
            raise self.failed
        return st.tail

    async def wait_for_records(self, uid: bytes, after_seq: int, timeout: float) -> bool:
        """Wait until the durable tail passes `after_seq`; False on timeout."""
        st = await self.state(uid)  # the live state object (an idle one may be reloaded)
        if st is None or st.durable_seq > after_seq or st.deleted:
            return True
        fut = asyncio.get_running_loop().create_future()
        if st.waiters is None:
            st.waiters = []
        st.waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if st.waiters and fut in st.waiters:
                st.waiters.remove(fut)

