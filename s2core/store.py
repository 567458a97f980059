"""StreamStore: the public async API of s2core (basins, streams, append, read, follow).

It owns the channels, the metadata store and the segment catalog, routes each stream to
the channel of its current streamlet, validates input and applies S2's read semantics.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from s2core.catalog import RewriteStats, SegmentCatalog
from s2core.channel import Channel, ChannelConfig
from s2core.clock import Clock, SystemClock
from s2core.errors import (
    AlreadyExists,
    BasinNotFound,
    InvalidArgument,
    LimitExceeded,
    NotServed,
    ReadPastTail,
    Sealed,
    StreamNotFound,
)
from s2core.metadata.base import MetadataStore, Op, VersionMismatch
from s2core.metadata.settle import SettlingMetadataStore
from s2core.names import validate_basin_name, validate_stream_name
from s2core.objstore.base import ObjectStore
from s2core.records import (
    BODY,
    HEADERS,
    TS,
    AppendAck,
    AppendRecord,
    ReadBatch,
    SequencedRecord,
    StreamPosition,
    metered_size,
    parse_command,
)
from s2core.streamconfig import BasinConfig, StreamConfig
from s2core.streamstate import StreamState, encode_ckpt
from s2core.wal.log import ChunkLog

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """Request limits (S2's defaults)."""

    max_append_records: int = 1000
    max_append_bytes: int = 1024 * 1024
    read_default_records: int = 1000
    read_default_bytes: int = 1024 * 1024


@dataclass(slots=True)
class StreamInfo:
    """A stream as listed."""

    name: str
    created_at_ms: int
    deleted_at_ms: int | None = None


@dataclass(slots=True)
class BasinInfo:
    """A basin as listed."""

    name: str
    created_at_ms: int
    state: str = "active"


@dataclass(slots=True)
class _Handle:
    """Cached stream row: identity, config and streamlet chain."""

    uid: bytes
    created_at_ms: int
    config: StreamConfig
    chain: list[dict]
    version: int
    read_at: float = 0.0  # (clock.monotonic(): a stream served elsewhere is read again)


@dataclass(slots=True)
class ChannelSpec:
    """How to build one local channel: its WAL replicas, quorum and tuning."""

    name: str
    replicas: list[ObjectStore]
    write_quorum: int
    config: ChannelConfig


class StreamStore:
    """The stream store. Create with `await StreamStore.open(...)`, close with `close()`."""

    def __init__(self, metadata: MetadataStore, segments: ObjectStore,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 limits: Limits | None = None, owner: str = "") -> None:
        # writes whose answer was lost are settled by reading back (s2core.metadata.settle)
        self.metadata = metadata if isinstance(metadata, SettlingMetadataStore) \
            else SettlingMetadataStore(metadata)
        self.segments = segments
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.limits = limits or Limits()
        self.owner = owner
        self.catalog = SegmentCatalog(self.metadata, segments, rng=self.rng)
        # segment objects being written (by offloads and compactions): s2core/sweep.py
        self.in_flight = self.catalog.in_flight
        self.channels: dict[str, Channel] = {}
        self.class_channel: dict[str, str] = {}
        self.default_channel = ""
        self._handles: OrderedDict[tuple[str, str], _Handle] = OrderedDict()
        self._max_handles = 65536
        # A cached row of a stream another process serves is read again after this long (or
        # at once when asked to serve it): another process may have moved the stream
        self.remote_handle_ttl_s = 1.0
        self._bg: set[asyncio.Task] = set()
        self._purging: dict[bytes, asyncio.Future] = {}

    @classmethod
    async def open(cls, metadata: MetadataStore, segments: ObjectStore,
                   channels: list[ChannelSpec], *, clock: Clock | None = None,
                   rng: random.Random | None = None, limits: Limits | None = None,
                   storage_classes: dict[str, str] | None = None,
                   owner: str = "") -> StreamStore:
        """Open the store: recover every channel (fencing previous owners)."""
        store = cls(metadata, segments, clock, rng, limits, owner)
        try:
            for spec in channels:
                await store.adopt_channel(spec)
        except BaseException:
            # a channel that did not recover fails the open: stop those that did (their
            # offloaders would otherwise keep running, fenced by the next open)
            for ch in store.channels.values():
                with contextlib.suppress(Exception):
                    await ch.close()
            raise
        store.default_channel = channels[0].name
        store.class_channel = dict(storage_classes or {})
        return store

    async def adopt_channel(self, spec: ChannelSpec) -> Channel:
        """Serve the channel `spec` describes from now on: take its lease (fencing the
        process that had it) and recover its log, as `open` does for each channel. Its
        streams are then served here, from the records its log held on."""
        if spec.name in self.channels:
            raise InvalidArgument(f"channel {spec.name!r} is served already")
        clog = ChunkLog(spec.name, spec.replicas, spec.write_quorum, self.metadata,
                        self.clock, self.rng, self.owner)
        ch = Channel(spec.name, clog, self.metadata, self.segments, self.clock, spec.config)
        ch.offloader.catalog_listeners.append(self.catalog.on_new_section)
        ch.offloader.in_flight = self.in_flight
        await ch.open(owns=self._owned_by(spec.name))
        self.channels[spec.name] = ch
        return ch

    async def release_channel(self, name: str) -> None:
        """Stop serving channel `name` (another process took it over, or is to): flush
        what is open and close it, and the replicas its spec gave (a local log's
        directory is free for another process then). Its streams answer NotServed here
        from then on."""
        ch = self.channels.pop(name, None)
        if ch is None:
            return
        try:
            await asyncio.wait_for(ch.close(), 30)
        except Exception:  # fenced, most likely (TimeoutError included)
            log.warning("closing released channel %s did not finish cleanly", name,
                        exc_info=True)
        for replica in ch.log.replicas:
            try:
                await replica.close()
            except Exception:  # what it held goes with it anyway
                log.warning("closing a replica of released channel %s failed", name,
                            exc_info=True)

    def _owned_by(self, channel: str):
        async def owns(st: StreamState) -> bool:
            row = await self.metadata.get(_stream_key(st.basin, st.name))
            if row is None:
                return False
            d = json.loads(row.value)
            return d["uid"] == st.uid.hex() and d["chain"][-1]["channel"] == channel
        return owns

    async def close(self) -> None:
        """Flush open chunks (everything acked is already durable) and stop."""
        for t in list(self._bg):
            t.cancel()
        for ch in self.channels.values():
            await ch.close()

    # ---------------------------------------------------------------- basins

    async def create_basin(self, name: str, config: dict | None = None) -> BasinInfo:
        validate_basin_name(name)
        cfg = BasinConfig.from_json(config)
        now = self.clock.now_ms()
        row = {"config": cfg.to_json(), "created_at": now}
        try:
            await self.metadata.create(f"basin/{name}", json.dumps(row).encode())
        except VersionMismatch:
            raise AlreadyExists(f"basin {name!r} already exists") from None
        return BasinInfo(name, now)

    async def ensure_basin(self, name: str, config: dict | None = None) -> bool:
        """Create the basin unless it exists; returns whether it was created."""
        try:
            await self.create_basin(name, config)
            return True
        except AlreadyExists:
            return False

    async def _basin(self, name: str) -> tuple[dict, int]:
        validate_basin_name(name)
        row = await self.metadata.get(f"basin/{name}")
        if row is None:
            raise BasinNotFound(f"basin {name!r} does not exist")
        return json.loads(row.value), row.version

    async def get_basin_config(self, name: str) -> BasinConfig:
        row, _ = await self._basin(name)
        return BasinConfig.from_json(row["config"])

    async def reconfigure_basin(self, name: str, patch: dict) -> BasinConfig:
        while True:
            row, version = await self._basin(name)
            cfg = BasinConfig.from_json(row["config"]).merged(patch)
            row["config"] = cfg.to_json()
            try:
                await self.metadata.put(f"basin/{name}", json.dumps(row).encode(), version)
                return cfg
            except VersionMismatch:
                continue

    async def list_basins(self, prefix: str = "", start_after: str = "",
                          limit: int = 1000) -> tuple[list[BasinInfo], bool]:
        rows = await self.metadata.list_prefix(
            f"basin/{prefix}", start_after=f"basin/{start_after}" if start_after else "",
            limit=limit + 1)
        out = [BasinInfo(k[len("basin/"):], json.loads(v.value)["created_at"])
               for k, v in rows[:limit]]
        return out, len(rows) > limit

    async def delete_basin(self, name: str) -> None:
        await self._basin(name)
        while True:
            streams, more = await self.list_streams(name, limit=1000)
            for s in streams:
                try:
                    await self.delete_stream(name, s.name)
                except StreamNotFound:
                    pass
            if not more:
                break
        await self.metadata.delete(f"basin/{name}")

    # --------------------------------------------------------------- streams

    async def create_stream(self, basin: str, name: str,
                            config: dict | None = None, *,
                            channel: str | None = None) -> StreamInfo:
        """Create a stream; its first streamlet is on `channel` (a channel of this store or
        of another process sharing its metadata), by default the one of its storage
        class."""
        validate_stream_name(name)
        brow, _ = await self._basin(basin)
        cfg = BasinConfig.from_json(brow["config"]).default_stream_config.merged(config)
        uid = uuid.UUID(int=self.rng.getrandbits(128)).bytes
        now = self.clock.now_ms()
        if channel is None:
            channel = self.class_channel.get(cfg.storage_class, self.default_channel)
        row = {"uid": uid.hex(), "created_at": now, "config": cfg.to_json(),
               "chain": [{"channel": channel, "start": 0, "sealed_at": None}]}
        try:
            await self.metadata.write_batch([
                Op("put", _stream_key(basin, name), json.dumps(row).encode()),
                Op("put", f"ckpt/{uid.hex()}", encode_ckpt(basin, name, 0, 0, "", 0)),
            ])
        except VersionMismatch:
            raise AlreadyExists(f"stream {name!r} already exists in basin {basin!r}") from None
        return StreamInfo(name, now)

    async def ensure_stream(self, basin: str, name: str, config: dict | None = None) -> bool:
        try:
            await self.create_stream(basin, name, config)
            return True
        except AlreadyExists:
            return False

    async def list_streams(self, basin: str, prefix: str = "", start_after: str = "",
                           limit: int = 1000) -> tuple[list[StreamInfo], bool]:
        await self._basin(basin)
        base = f"stream/{basin}/"
        rows = await self.metadata.list_prefix(
            base + prefix, start_after=base + start_after if start_after else "",
            limit=limit + 1)
        out = [StreamInfo(k[len(base):], json.loads(v.value)["created_at"])
               for k, v in rows[:limit]]
        return out, len(rows) > limit

    async def _handle(self, basin: str, name: str, *, create: bool = False,
                      serve: bool = False) -> _Handle:
        """The stream's row, cached. `serve`: the caller will serve the stream, so a cached
        row naming a channel another process serves is read again first (the stream may
        have moved here: `move_stream`)."""
        key = (basin, name)
        h = self._handles.get(key)
        if h is not None:
            if h.chain[-1]["channel"] in self.channels or (
                    not serve and self.clock.monotonic() - h.read_at < self.remote_handle_ttl_s):
                self._handles.move_to_end(key)
                return h
            del self._handles[key]
        validate_stream_name(name)
        row = await self.metadata.get(_stream_key(basin, name))
        if row is None:
            brow, _ = await self._basin(basin)
            if create:
                await self.ensure_stream(basin, name)
                return await self._handle(basin, name)
            raise StreamNotFound(f"stream {name!r} does not exist in basin {basin!r}")
        d = json.loads(row.value)
        h = _Handle(bytes.fromhex(d["uid"]), d["created_at"],
                    StreamConfig.from_json(d["config"]), d["chain"], row.version,
                    self.clock.monotonic())
        self._handles[key] = h
        if len(self._handles) > self._max_handles:
            self._handles.popitem(last=False)
        return h

    async def get_stream_config(self, basin: str, name: str) -> StreamConfig:
        return (await self._handle(basin, name)).config

    async def reconfigure_stream(self, basin: str, name: str, patch: dict) -> StreamConfig:
        while True:
            h = await self._handle(basin, name)
            cfg = h.config.merged(patch)
            if "storage_class" in (patch or {}) and patch["storage_class"] is not None \
                    and cfg.storage_class != h.config.storage_class:
                raise InvalidArgument("storage_class cannot be changed after creation")
            try:
                await self._write_row(basin, name, h, config=cfg)
                return cfg
            except VersionMismatch:
                self._handles.pop((basin, name), None)

    async def _write_row(self, basin: str, name: str, h: _Handle, *,
                         config: StreamConfig | None = None,
                         chain: list[dict] | None = None) -> None:
        row = {"uid": h.uid.hex(), "created_at": h.created_at_ms,
               "config": (config or h.config).to_json(), "chain": chain or h.chain}
        v = await self.metadata.put(_stream_key(basin, name), json.dumps(row).encode(),
                                    h.version)
        self._handles[(basin, name)] = _Handle(h.uid, h.created_at_ms, config or h.config,
                                               chain or h.chain, v, self.clock.monotonic())

    async def delete_stream(self, basin: str, name: str) -> None:
        h = await self._handle(basin, name)
        try:
            await self.metadata.write_batch([
                Op("delete", _stream_key(basin, name), expected_version=h.version),
                Op("delete", f"ckpt/{h.uid.hex()}"),
            ])
        except VersionMismatch:
            self._handles.pop((basin, name), None)
            return await self.delete_stream(basin, name)
        self._handles.pop((basin, name), None)
        for ch in self.channels.values():
            ch.forget(h.uid)
        self._background(self._purge(h.uid, None))

    def forget_stream(self, basin: str, name: str) -> None:
        """Another process deleted (or deleted and made again) the stream: drop what this
        one keeps of it (its cached row, its state in a channel here)."""
        h = self._handles.pop((basin, name), None)
        if h is not None:
            for ch in self.channels.values():
                ch.forget(h.uid)

    def _background(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def _channel(self, h: _Handle) -> Channel:
        link = h.chain[-1]
        ch = self.channels.get(link["channel"])
        if ch is None:
            raise NotServed(f"channel {link['channel']!r} is not served by this process")
        return ch

    async def _state(self, h: _Handle) -> tuple[Channel, StreamState]:
        ch = self._channel(h)
        st = await ch.state(h.uid)
        if st is None:
            raise StreamNotFound("stream was deleted")
        return ch, st

    # ---------------------------------------------------------------- append

    async def append(self, basin: str, name: str, records: list[AppendRecord], *,
                     match_seq_num: int | None = None,
                     fencing_token: str | None = None) -> AppendAck:
        """Append a batch atomically; returns once it is durable on a write quorum."""
        _, fut = await self.submit_append(basin, name, records, match_seq_num=match_seq_num,
                                          fencing_token=fencing_token)
        return await fut

    async def submit_append(self, basin: str, name: str, records: list[AppendRecord], *,
                            match_seq_num: int | None = None,
                            fencing_token: str | None = None,
                            max_bytes: int | None = None) -> tuple[int, asyncio.Future]:
        """Validate and sequence a batch; return its first seq_num and a future that
        resolves to the AppendAck once the batch is durable (or to the append's error).

        `max_bytes` raises the per-append size limit for trusted callers (the Kafka layer
        enforces its own per-topic limits)."""
        if not records:
            raise InvalidArgument("an append needs at least one record")
        if len(records) > self.limits.max_append_records:
            raise LimitExceeded(f"an append takes at most {self.limits.max_append_records} "
                                "records")
        total = 0
        commands = []
        for r in records:
            cmd = parse_command(r.headers, r.body) if r.headers else None
            # A command record may take no seq_num at all (span 0): the Kafka layer trims a
            # partition without moving its high watermark.
            if r.span < (0 if cmd is not None else 1):
                raise InvalidArgument("record span must be >= 1 (>= 0 for command records)")
            total += metered_size(r.headers, r.body)
            commands.append(cmd)
        limit = max_bytes or self.limits.max_append_bytes
        if total > limit:
            raise LimitExceeded(f"append of {total} metered bytes is over the limit of "
                                f"{limit}")
        if fencing_token is not None and len(fencing_token.encode()) > 36:
            raise InvalidArgument("fencing token longer than 36 bytes")
        try:
            h = await self._handle(basin, name, serve=True)
        except StreamNotFound:
            brow, _ = await self._basin(basin)
            if not brow["config"].get("create_stream_on_append", False):
                raise
            h = await self._handle(basin, name, create=True)
        if h.chain[-1]["sealed_at"] is not None:
            raise Sealed(f"stream {name!r} is sealed; retry")
        ch = self._channel(h)
        timestamps = self._timestamps(h.config, records)
        return await ch.submit(h.uid, name, records, commands, match_seq_num, fencing_token,
                               timestamps)

    def _timestamps(self, cfg: StreamConfig, records: list[AppendRecord]) -> list[int]:
        now = self.clock.now_ms()
        out = []
        for r in records:
            if cfg.timestamping_mode == "arrival" or r.timestamp is None:
                if r.timestamp is None and cfg.timestamping_mode == "client-require":
                    raise InvalidArgument("this stream requires client timestamps")
                out.append(now)
            else:
                if r.timestamp < 0:
                    raise InvalidArgument("timestamps must be >= 0")
                out.append(r.timestamp if cfg.timestamping_uncapped else min(r.timestamp, now))
        return out

    # ------------------------------------------------------------------ read

    async def check_tail(self, basin: str, name: str) -> StreamPosition:
        ch, st = await self._state(await self._handle(basin, name, serve=True))
        ch.note_read(st)
        return st.tail

    async def wait_for_tail(self, basin: str, name: str, beyond: int, timeout: float) -> bool:
        """Wait until the stream's tail is past `beyond`; False on timeout."""
        h = await self._handle(basin, name, serve=True)
        return await self._channel(h).wait_for_records(h.uid, beyond, timeout)

    async def first_seq(self, basin: str, name: str) -> int:
        """The first readable seq_num (after trims and retention)."""
        h = await self._handle(basin, name, serve=True)
        _, st = await self._state(h)
        return await self._first_seq(h, st)

    async def _first_seq(self, h: _Handle, st: StreamState) -> int:
        first = st.trim_seq
        cutoff = self._cutoff(h)
        if cutoff is not None:
            by_age = await self._seq_for_timestamp(st, cutoff)
            first = max(first, by_age)
        return min(first, st.durable_seq)

    def _cutoff(self, h: _Handle) -> int | None:
        age = h.config.retention_age_s
        return None if age is None else self.clock.now_ms() - age * 1000

    async def _seq_for_timestamp(self, st: StreamState, ts: int) -> int:
        if st.mem_seqs and st.mem_recs[0][TS] >= ts:
            found = None
            if st.mem_first > 0:
                found = await self.catalog.seq_for_timestamp(st.uid, ts)
            return found if found is not None and found < st.mem_first else st.mem_first
        if st.mem_seqs:
            i = st.mem_index_ts(ts)
            return st.mem_seqs[i] if i < len(st.mem_seqs) else st.durable_seq
        found = await self.catalog.seq_for_timestamp(st.uid, ts)
        return st.durable_seq if found is None else found

    async def read(self, basin: str, name: str, *, seq_num: int | None = None,
                   timestamp: int | None = None, tail_offset: int | None = None,
                   count: int | None = None, max_bytes: int | None = None,
                   until: int | None = None, clamp: bool = False,
                   views: bool = False) -> ReadBatch:
        """One bounded read (S2's unary read). Reads past the tail raise ReadPastTail unless
        `clamp`; a read at the tail returns no records. `views`: record bodies may be
        read-only memoryviews instead of bytes (no copy; for callers that only send them)."""
        h = await self._read_handle(basin, name)
        ch, st = await self._state(h)
        start = await self._resolve_start(h, st, seq_num, timestamp, tail_offset, clamp)
        records = await self._collect(h, st, start,
                                      count or self.limits.read_default_records,
                                      max_bytes or self.limits.read_default_bytes, until,
                                      views)
        ch.note_read(st)
        return ReadBatch(records, st.tail)

    async def _read_handle(self, basin: str, name: str) -> _Handle:
        try:
            return await self._handle(basin, name, serve=True)
        except StreamNotFound:
            brow, _ = await self._basin(basin)
            if not brow["config"].get("create_stream_on_read", False):
                raise
            return await self._handle(basin, name, create=True)

    async def _resolve_start(self, h: _Handle, st: StreamState, seq_num, timestamp,
                             tail_offset, clamp: bool) -> int:
        given = [x is not None for x in (seq_num, timestamp, tail_offset)]
        if sum(given) > 1:
            raise InvalidArgument("give at most one of seq_num, timestamp and tail_offset")
        for v in (seq_num, timestamp, tail_offset):
            if v is not None and v < 0:
                raise InvalidArgument("read start must be >= 0")
        if tail_offset is not None:
            start = max(0, st.durable_seq - tail_offset)
        elif timestamp is not None:
            start = await self._seq_for_timestamp(st, timestamp)
        else:
            start = seq_num or 0
        if start > st.durable_seq:
            if not clamp:
                raise ReadPastTail(st.durable_seq, st.durable_ts)
            start = st.durable_seq
        return max(start, await self._first_seq(h, st))

    async def _collect(self, h: _Handle, st: StreamState, start: int, count: int,
                       max_bytes: int, until: int | None,
                       views: bool = False) -> list[SequencedRecord]:
        out: list[SequencedRecord] = []
        size = 0
        seq = start
        cutoff = self._cutoff(h)
        while seq < st.durable_seq:
            if seq < st.mem_first:
                source = self.catalog.iter_records(st.uid, seq, st.mem_first, views)
            else:
                # (no more than can be taken: the tail may hold 100,000s of records)
                source = _aiter_list(st.records_from(st.mem_index(seq), count - len(out)))
            progressed = False
            async for rec in source:
                progressed = True
                if cutoff is not None and rec.timestamp < cutoff:
                    seq = rec.end_seq
                    continue
                if until is not None and rec.timestamp >= until:
                    return out
                n = metered_size(rec.headers, rec.body)
                if out and (len(out) >= count or size + n > max_bytes):
                    return out
                out.append(rec)
                size += n
                seq = rec.end_seq
                if len(out) >= count or size >= max_bytes:
                    return out
            if not progressed:
                if seq >= st.mem_first:
                    break
                seq = st.mem_first  # the rest below the memory was compacted away
        return out

    async def read_session(self, basin: str, name: str, *, seq_num: int | None = None,
                           timestamp: int | None = None, tail_offset: int | None = None,
                           count: int | None = None, max_bytes: int | None = None,
                           until: int | None = None, clamp: bool = False,
                           wait_s: float | None = None,
                           heartbeat_s: float = 5.0) -> AsyncIterator[ReadBatch]:
        """Follow a stream: yields batches as records arrive and, while idle, a heartbeat
        (a batch with no records) every `heartbeat_s`. Ends when `count`/`max_bytes`/`until`
        is reached, or after `wait_s` seconds without records."""
        h = await self._read_handle(basin, name)
        ch, st = await self._state(h)
        seq = await self._resolve_start(h, st, seq_num, timestamp, tail_offset, clamp)
        left_n, left_b = count, max_bytes
        idle_since = self.clock.monotonic()
        while True:
            h = await self._handle(basin, name)
            ch, st = await self._state(h)
            seq = max(seq, await self._first_seq(h, st))
            recs = await self._collect(
                h, st, seq, min(left_n or self.limits.read_default_records,
                                self.limits.read_default_records),
                min(left_b or self.limits.read_default_bytes, self.limits.read_default_bytes),
                until)
            if recs:
                yield ReadBatch(recs, st.tail)
                seq = recs[-1].end_seq
                idle_since = self.clock.monotonic()
                if left_n is not None:
                    left_n -= len(recs)
                    if left_n <= 0:
                        return
                if left_b is not None:
                    left_b -= sum(metered_size(r.headers, r.body) for r in recs)
                    if left_b <= 0:
                        return
                continue
            if until is not None and seq < st.durable_seq:
                return  # the next record is at or past `until`
            timeout = heartbeat_s
            if wait_s is not None:
                left = wait_s - (self.clock.monotonic() - idle_since)
                if left <= 0:
                    return
                timeout = min(timeout, left)
            if not await ch.wait_for_records(h.uid, seq, timeout):
                yield ReadBatch([], (await ch.state(h.uid) or st).tail)
            elif st.deleted or await ch.state(h.uid) is None:
                raise StreamNotFound("stream was deleted")

    # ------------------------------------------------------------ streamlets

    async def seal_stream(self, basin: str, name: str) -> StreamPosition:
        """Seal the current streamlet: appends fail with Sealed until a new one is linked."""
        h = await self._handle(basin, name)
        ch, st = await self._state(h)
        tail = await ch.seal(st)
        chain = [dict(x) for x in h.chain]
        chain[-1]["sealed_at"] = tail.seq_num
        await self._write_row(basin, name, h, chain=chain)
        return tail

    async def move_stream(self, basin: str, name: str, channel: str, *,
                          remote: bool = False) -> None:
        """Move a stream to another channel: seal, offload its tail, link a new streamlet.
        `remote`: the channel is another process's (sharing this metadata and segment
        store), which serves the stream from then on. Safe to call again after a stop
        in the middle (a sealed streamlet is sealed again, the rest is idempotent)."""
        if channel not in self.channels and not remote:
            raise InvalidArgument(f"unknown channel {channel!r}")
        h = await self._handle(basin, name, serve=True)
        old = self._channel(h)
        if old.name == channel:
            return
        tail = await self.seal_stream(basin, name)
        # the state only now: an idle one looked up before sealing may have been evicted
        # meanwhile and reloaded as another object, which is the one offloads advance (a
        # sealed state is never idle, so this one stays until the move forgets it)
        _, st = await self._state(h)
        while st.offloaded_upto < tail.seq_num:
            # (nothing left to do may mean the background offload just did it)
            if not await old.offloader.offload_once() and st.offloaded_upto < tail.seq_num:
                raise AssertionError(f"stream {name!r}: records below {tail.seq_num} are in no "
                                     "chunk left to offload")
        # the checkpoint must carry every command applied so far (a trim or fence that took
        # no seq_num never reaches a section): the new channel starts from it
        await old.offloader.write_checkpoint(st)
        old.forget(st.uid)
        if channel in self.channels:
            self.channels[channel].forget(st.uid)  # a stale state from an earlier stay there
        h = await self._handle(basin, name)
        chain = [dict(x) for x in h.chain] + [{"channel": channel, "start": tail.seq_num,
                                               "sealed_at": None}]
        await self._write_row(basin, name, h, chain=chain)

    # ------------------------------------------------------------- retention

    async def offloaded_sections(self, basin: str,
                                 name: str) -> list[tuple[int, int, int, int]]:
        """(first seq, end seq, newest timestamp, bytes) of each offloaded section, in order:
        the stream's closed segments, for callers that apply their own retention rules."""
        h = await self._handle(basin, name)
        starts, rows = await self.catalog.rows(h.uid)
        return [(start, row["e"], row["t1"], row["n"]) for start, row in zip(starts, rows)]

    def cached_storage_class(self, basin: str, name: str) -> str:
        """The storage class of a stream whose handle is cached (what an append just
        used), "standard" otherwise."""
        h = self._handles.get((basin, name))
        return h.config.storage_class if h is not None else "standard"

    async def storage_bytes(self, basin: str, name: str) -> int:
        """What a stream stores: its offloaded sections' bytes plus the metered size of
        its durable records not offloaded yet (0 for a stream that does not exist)."""
        try:
            h = await self._handle(basin, name)
        except (StreamNotFound, BasinNotFound):
            return 0
        _, rows = await self.catalog.rows(h.uid)
        total = sum(row["n"] for row in rows)
        st = self._resident(h.uid)
        if st is not None:
            total += sum(metered_size(r[HEADERS], r[BODY])
                         for r in st.records_between(st.offloaded_upto, st.durable_seq))
        return total

    async def trim_and_retain(self, page_size: int = 200) -> int:
        """Remove catalog rows (and unreferenced objects) below each stream's trim point and
        the sections whose newest record is older than its retention age; purge what is left
        of deleted streams. Returns how many catalog rows were removed. Run periodically by
        the server.

        The pass works from metadata alone: pages of `seg/` rows (only each stream's first
        section is looked at), then the checkpoints of those streams, and a stream's config
        only when its first section is older than the shortest retention of any stream. No
        stream state is loaded, so idle streams stay idle; a resident stream's state is
        used as it is (it may carry a newer trim). Between pages the pass rests as long
        as the page took.
        """
        now = self.clock.now_ms()
        oldest_kept = None  # a section this new is kept by every stream
        removed = 0
        after = ""
        while True:
            page_started = self.clock.monotonic()
            rows = await self.metadata.list_prefix("seg/", start_after=after, limit=page_size)
            if not rows:
                return removed
            if oldest_kept is None:
                shortest = await self._shortest_retention_s(page_size)
                oldest_kept = -1 if shortest is None else now - shortest * 1000
                page_started = self.clock.monotonic()
            firsts = _first_sections(rows)
            uids = list(firsts)
            # checkpoints are read after the sections: a missing one means a deleted stream
            ckpts = await self._checkpoints(uids, page_size)
            for uid in uids:
                removed += await self._retain(bytes.fromhex(uid), firsts[uid],
                                              ckpts.get(uid), now, oldest_kept)
            after = f"seg/{uids[-1]}/~"  # past every section of the last stream seen
            # rest as long as the page took: appends get the loop (and the GIL) at least half
            # the time (yielding with sleep(0) alone made them ~20x slower during a pass)
            await self.clock.sleep(self.clock.monotonic() - page_started)

    async def _checkpoints(self, uids: list[str], page_size: int) -> dict[str, dict]:
        """The checkpoints of `uids` (hex, ascending): one range scan when they are dense
        among all checkpoints (idle streams with data), a get per stream otherwise."""
        wanted = set(uids)
        out: dict[str, dict] = {}
        rows = await self.metadata.list_prefix(
            "ckpt/", start_after=f"ckpt/{uids[0][:-1]}", limit=page_size)
        for key, v in rows:
            if key[len("ckpt/"):] in wanted:
                out[key[len("ckpt/"):]] = json.loads(v.value)
        if len(rows) == page_size and rows[-1][0] < f"ckpt/{uids[-1]}":
            for uid in uids:
                if uid not in out and f"ckpt/{uid}" > rows[-1][0]:
                    row = await self.metadata.get(f"ckpt/{uid}")
                    if row is not None:
                        out[uid] = json.loads(row.value)
        return out

    async def _retain(self, uid: bytes, first: dict, ck: dict | None, now: int,
                      oldest_kept: int) -> int:
        """Apply trim and retention to one stream given its first section's row; its
        config is read only when that section is older than `oldest_kept`."""
        if ck is None:  # deleted (checkpoint and stream row go together): purge all
            return await self._purge(uid, None)
        st = self._resident(uid)
        trim, upto = (st.trim_seq, st.offloaded_upto) if st else (ck["trim"], ck["next"])
        below = min(trim, upto)
        if first["t1"] < oldest_kept:
            cutoff = await self._retention_cutoff(now, ck["b"], ck["s"], uid)
            if cutoff is not None and first["t1"] < cutoff:
                _, rows = await self.catalog.rows(uid)
                for row in rows:  # the oldest sections, up to the first one kept
                    if row["t1"] >= cutoff:
                        break
                    below = min(max(below, row["e"]), upto)
        if first["e"] > below:
            return 0
        return await self._purge(uid, below)

    def _resident(self, uid: bytes) -> StreamState | None:
        for ch in self.channels.values():
            st = ch.streams.get(uid)
            if st is not None and not st.deleted:
                return st
        return None

    async def _retention_cutoff(self, now_ms: int, basin: str, name: str,
                                uid: bytes) -> int | None:
        """The oldest timestamp a stream keeps, from a cached handle or its row (read
        without caching it: a pass must not flood the handle cache); None: keeps all."""
        h = self._handles.get((basin, name))
        if h is not None:
            config = h.config if h.uid == uid else None
        else:
            row = await self.metadata.get(_stream_key(basin, name))
            d = json.loads(row.value) if row is not None else None
            config = (StreamConfig.from_json(d["config"])
                      if d is not None and d["uid"] == uid.hex() else None)
        if config is None or config.retention_age_s is None:
            return None
        return now_ms - config.retention_age_s * 1000

    async def _shortest_retention_s(self, page_size: int) -> int | None:
        """The shortest retention age of any stream (None: all keep everything), from one
        paged walk of the stream rows. A stream created or shortened meanwhile is only
        seen by the next pass: the pass then keeps more, never less."""
        shortest = None
        after = ""
        while True:
            page_started = self.clock.monotonic()
            rows = await self.metadata.list_prefix("stream/", start_after=after,
                                                   limit=page_size)
            for _, v in rows:
                age = json.loads(v.value)["config"]["retention_policy"].get("age")
                if age is not None and (shortest is None or age < shortest):
                    shortest = age
            if len(rows) < page_size:
                return shortest
            after = rows[-1][0]
            await self.clock.sleep(self.clock.monotonic() - page_started)  # as in the pass

    async def _purge(self, uid: bytes, below: int | None) -> int:
        """`catalog.purge`, one at a time per stream: two purges of one section would both
        decrement its object's live count (and delete an object still in use)."""
        async with self._exclusive(uid):
            return await self.catalog.purge(uid, below)

    @contextlib.asynccontextmanager
    async def _exclusive(self, uid: bytes):
        """One purge or rewrite of a stream's sections at a time (both lower the live
        counts of its objects)."""
        while (busy := self._purging.get(uid)) is not None:
            await asyncio.wait([busy])
        done = asyncio.get_running_loop().create_future()
        self._purging[uid] = done
        try:
            yield
        finally:
            del self._purging[uid]
            done.set_result(None)

    # ------------------------------------------------------------- compaction

    def quiet(self) -> bool:
        """No channel has taken an append of late: background work need not rest between
        its slices (see Slices)."""
        return all(ch.offloader.quiet() for ch in self.channels.values())

    async def rewrite_offloaded(self, basin: str, name: str, upto: int,
                                rewrite: Callable[[SequencedRecord], SequencedRecord | None],
                                *, group_bytes: int = 8 * 1024 * 1024,
                                tick=None) -> RewriteStats:
        """Rewrite a stream's offloaded sections that end at or below `upto` record by
        record (`SegmentCatalog.rewrite`): the storage step of a keyed compaction, whose
        caller decides what each record becomes (kept, replaced by one with the same
        seq_num, span and timestamp, or dropped). The part still only in the WAL is never
        touched. Records of the rewritten range still held in memory are let go, so that
        reads see the rewritten sections from then on."""
        h = await self._handle(basin, name)
        offloader = self._channel(h).offloader  # (its writes' pace leaves the WAL its disk)
        writer = self.channels[self.default_channel].log
        async with self._exclusive(h.uid):
            stats = await self.catalog.rewrite(h.uid, upto, rewrite,
                                               object_prefix="segments/compacted",
                                               group_bytes=group_bytes, tick=tick,
                                               pace=offloader.background_pace,
                                               writer=(writer.channel, writer.epoch))
        st = self._resident(h.uid)
        if st is not None:
            st.evict_below(min(upto, st.offloaded_upto))
        return stats


def _first_sections(rows: list) -> dict[str, dict]:
    """uid hex -> first section row of each stream in a page of `seg/` rows (rows are in
    key order, so a stream's first row in the page is its first section, unless the page
    starts inside the stream, which the pass never does)."""
    out: dict[str, dict] = {}
    for key, v in rows:
        uid = key[len("seg/"):key.rindex("/")]
        if uid not in out:
            out[uid] = json.loads(v.value)
    return out


async def _aiter_list(items):
    for x in items:
        yield x


def _stream_key(basin: str, name: str) -> str:
    return f"stream/{basin}/{name}"
