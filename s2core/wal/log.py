"""The quorum chunk log: a replicated write-ahead log with lease epochs and fencing.

Chunks are written create-if-absent to N replica object stores under keys that include the
writer's epoch, and a write counts once W replicas have it (local directories fdatasync
before they answer). Acks are in order: chunk s is durable only when every chunk before it
is. Before an ack leaves, the writer re-reads its lease; a newer epoch means it was taken
over and it raises Fenced instead (the new owner bumps the epoch *before* it lists the
replicas, so anything this writer acks was visible to the new owner's recovery).

Recovery (`open`) bumps the epoch, lists every reachable replica (at least N-W+1, so every
acked chunk is seen), ends each unfinished old epoch at its first missing chunk, repairs
the chunks above the last `durable_upto` (the window of uncertainty) onto a quorum, checks
every checksum (repairing bad copies from good ones), records the old epochs' ends and
returns the chunks from the offload floor on, in order.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field

from s2core.clock import Clock, Slices
from s2core.errors import Closed, Corrupt, Fenced, Indeterminate, S2Error, Unavailable
from s2core.metadata.base import MetadataStore, Op, VersionMismatch
from s2core.objstore.base import ObjectExists, ObjectNotFound, ObjectStore
from s2core.wal.chunk import (
    ChunkBuilder, ChunkHeader, chunk_key, decode_header, parse_chunk_key,
)

log = logging.getLogger(__name__)

Pos = tuple[int, int]  # (epoch, seq): chunks are ordered by it


@dataclass(slots=True)
class RecoveredChunk:
    """A valid chunk found by recovery."""

    pos: Pos
    header: ChunkHeader
    data: bytes


@dataclass
class LeaseState:
    """The channel's row in metadata: epoch, ends of old epochs, offload floor."""

    epoch: int = 0
    ends: dict[int, int] = field(default_factory=dict)
    floor: Pos = (0, 0)
    owner: str = ""

    def encode(self) -> bytes:
        return json.dumps({"epoch": self.epoch, "ends": {str(k): v for k, v in self.ends.items()},
                           "floor": list(self.floor), "owner": self.owner}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> LeaseState:
        d = json.loads(raw)
        return cls(d["epoch"], {int(k): v for k, v in d["ends"].items()},
                   tuple(d["floor"]), d.get("owner", ""))


_GC_BATCH = 256  # chunks per delete_many call (local log replicas)


class ChunkLog:
    """Writer (and recoverer) of one channel's chunk log."""

    def __init__(self, channel: str, replicas: list[ObjectStore], write_quorum: int,
                 metadata: MetadataStore, clock: Clock, rng: random.Random,
                 owner: str = "") -> None:
        if not 1 <= write_quorum <= len(replicas):
            raise ValueError("write quorum must be between 1 and the number of replicas")
        self.channel = channel
        self.replicas = replicas
        self.write_quorum = write_quorum
        self.metadata = metadata
        self.clock = clock
        self.rng = rng
        self.owner = owner
        self.lease_key = f"channel/{channel}"
        self.lease = LeaseState()
        self.lease_version = 0
        self.next_seq = 0
        self.durable_upto = -1          # highest seq of this epoch durable with all before it
        self._quorum_done: set[int] = set()
        self._ack_waiters: dict[int, asyncio.Future] = {}
        self._background: set[asyncio.Task] = set()
        self._check_waiters: list[asyncio.Future] = []
        self._check_task: asyncio.Task | None = None
        self._checking = False
        self._written: list[Pos] = []   # chunks this log knows exist, for GC
        self._fenced: Fenced | None = None
        self._closed = False

    @property
    def epoch(self) -> int:
        return self.lease.epoch

    # ---------------------------------------------------------------- recovery

    async def open(self) -> list[RecoveredChunk]:
        """Take the lease (fencing any previous writer) and recover the valid chunks."""
        cur = await self.metadata.get(self.lease_key)
        if cur is None:
            lease = LeaseState(epoch=1, owner=self.owner)
            self.lease_version = await self.metadata.create(self.lease_key, lease.encode())
        else:
            lease = LeaseState.decode(cur.value)
            lease.epoch += 1
            lease.owner = self.owner
            self.lease_version = await self.metadata.put(self.lease_key, lease.encode(),
                                                         cur.version)
        self.lease = lease
        listings = await self._list_replicas()
        present: dict[Pos, list[int]] = {}
        for i, keys in listings.items():
            for key in keys:
                pos = parse_chunk_key(key)
                if pos is not None:
                    present.setdefault(pos, []).append(i)
        valid = self._valid_positions(present)
        chunks = []
        for pos in valid:
            chunks.append(await self._read_valid(pos, present[pos], listings))
        # End every unfinished old epoch at its first gap, including epochs of which no
        # listed replica holds a chunk: none of theirs was acked (an acked chunk is on a
        # quorum, and a quorum overlaps the listed replicas), but a replica down now may
        # hold one, and without a recorded end a later recovery would take it back.
        for e in range(max(lease.floor[0], 1), lease.epoch):
            if e not in lease.ends:
                lease.ends[e] = self._epoch_end(e, present)
        await self._write_lease()
        self._written = sorted(present)
        await self.collect_garbage()
        return chunks

    def _epoch_end(self, epoch: int, present: dict[Pos, list[int]]) -> int:
        """One past the last chunk of `epoch` that belongs to the log: the first gap at or
        above the floor (chunks below the floor were offloaded and may be gone)."""
        floor = self.lease.floor
        if epoch < floor[0]:
            return 0
        seq = floor[1] if epoch == floor[0] else 0
        while (epoch, seq) in present:
            seq += 1
        return seq

    def _valid_positions(self, present: dict[Pos, list[int]]) -> list[Pos]:
        floor = self.lease.floor
        out = []
        for e in sorted({p[0] for p in present}):
            end = self.lease.ends.get(e)
            if end is None:
                end = self._epoch_end(e, present)
            out.extend((e, s) for s in range(end) if (e, s) >= floor and (e, s) in present)
        return out

    async def _list_replicas(self) -> dict[int, list[str]]:
        prefix = f"wal/{self.channel}/"
        results = await asyncio.gather(*(r.list(prefix) for r in self.replicas),
                                       return_exceptions=True)
        listings = {i: res for i, res in enumerate(results) if not isinstance(res, BaseException)}
        need = len(self.replicas) - self.write_quorum + 1
        if len(listings) < need:
            raise Unavailable(f"recovery reached {len(listings)} of {len(self.replicas)} "
                              f"replicas; needs {need}")
        return listings

    async def _read_valid(self, pos: Pos, holders: list[int],
                          listings: dict[int, list[str]]) -> RecoveredChunk:
        """Read every listed copy of a chunk, repair the corrupt ones (and, when fewer than
        a quorum are left, put it on the listed replicas that lack it), and return it once
        a write quorum holds it. Corrupt copies and failed repairs do not count (a chunk
        this recovery keeps is served and built on, so it must be as durable as an
        acknowledged one); a listed copy that cannot be read just now does."""
        key = chunk_key(self.channel, *pos)
        copies = await asyncio.gather(*(self.replicas[i].get(key) for i in holders),
                                      return_exceptions=True)
        good: tuple[ChunkHeader, bytes] | None = None
        bad: list[int] = []
        unreadable = 0
        for i, data in zip(holders, copies):
            if isinstance(data, (S2Error, OSError)):
                unreadable += 1
                continue
            if isinstance(data, BaseException):
                raise data
            try:
                header = decode_header(data)
            except Corrupt:
                log.warning("chunk %s corrupt on replica %s", key, self.replicas[i].name)
                bad.append(i)
                continue
            if good is None:
                good = (header, data)
        if good is None:
            if unreadable:
                raise Unavailable(f"chunk {key}: no good copy read, {unreadable} unreadable")
            raise Corrupt(f"chunk {key}: no replica holds a copy that passes its checksum")
        header, data = good
        targets = list(bad)
        if len(holders) - len(bad) < self.write_quorum:
            targets += [i for i in listings if i not in holders]
        repaired = 0
        for i in targets:
            try:
                await self.replicas[i].put(key, data)
                repaired += 1
            except (S2Error, OSError) as e:
                log.warning("repair of %s on %s failed: %s", key, self.replicas[i].name, e)
        n = len(holders) - len(bad) + repaired
        if n < self.write_quorum:
            raise Unavailable(f"chunk {key}: {n} copies, quorum is {self.write_quorum}")
        return RecoveredChunk(pos, header, data)

    # ----------------------------------------------------------------- writing

    def new_chunk_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    async def write(self, builder: ChunkBuilder, seq: int) -> Pos:
        """Replicate chunk `seq` (from `new_chunk_seq`); return once it and all before it
        are on a write quorum and the lease is still ours."""
        if self._fenced:
            raise self._fenced
        parts = builder.finish(self.epoch, seq, self.durable_upto, self.clock.now_ms())
        joined: list[bytes] = []

        def data_for(replica):  # vectored replicas take the parts; others one joined copy
            if getattr(replica, "accepts_parts", False):
                return parts
            if not joined:
                joined.append(b"".join(parts))
            return joined[0]

        key = chunk_key(self.channel, self.epoch, seq)
        pos = (self.epoch, seq)
        self._written.append(pos)
        loop = asyncio.get_running_loop()
        quorum = loop.create_future()
        acks = [0]
        failed = [0]

        def acked() -> None:
            acks[0] += 1
            if acks[0] == self.write_quorum and not quorum.done():
                quorum.set_result(None)

        def on_replica_done(t: asyncio.Task) -> None:
            if t.cancelled():
                return
            err = t.exception()
            if err is None:
                acked()
                return
            # Not an error a retry can cure (_put_until_done retries those): a bug in a
            # replica backend. Once too few replicas are left for a quorum, the chunk
            # fails (and with it the channel) instead of leaving its appends waiting.
            failed[0] += 1
            if failed[0] > len(self.replicas) - self.write_quorum and not quorum.done():
                quorum.set_exception(Indeterminate(
                    f"chunk {key}: {failed[0]} replicas failed for good, last with {err!r}"))

        def retry(replica, data, failed_once=False) -> None:  # keep trying in a task
            t = loop.create_task(self._put_until_done(replica, key, data, failed_once))
            t.add_done_callback(on_replica_done)
            self._background.add(t)
            t.add_done_callback(self._background.discard)

        for i, replica in enumerate(self.replicas):
            data = data_for(replica)
            put_then = getattr(replica, "put_then", None)
            if put_then is not None and not self._closed:
                # copies beyond the quorum are lazy: where they share a device with the
                # others (replica directories on one disk), the acks do not wait for
                # the device to write them too (see locallog._Device)
                def done(err, replica=replica, data=data) -> None:
                    if err is None or isinstance(err, ObjectExists):
                        acked()  # (exists: our own earlier attempt; keys are per epoch)
                    elif not self._closed:
                        log.debug("chunk %s on %s: %s; retrying", key, replica.name, err)
                        retry(replica, data, True)
                try:
                    put_then(key, data, done, lazy=i >= self.write_quorum)
                    continue
                except (S2Error, OSError):  # (ObjectExists is an S2Error)
                    pass  # the task below retries (or finds it present)
            retry(replica, data)
        await quorum
        self._quorum_done.add(seq)
        self._advance_durable()
        if seq > self.durable_upto:
            waiter = self._ack_waiters.setdefault(seq, loop.create_future())
            await waiter
        await self._validate_lease()
        return pos

    def _advance_durable(self) -> None:
        while self.durable_upto + 1 in self._quorum_done:
            self.durable_upto += 1
            self._quorum_done.discard(self.durable_upto)
            waiter = self._ack_waiters.pop(self.durable_upto, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _put_until_done(self, replica: ObjectStore, key: str, data: bytes,
                              failed_once: bool = False) -> None:
        delay = 0.005
        if failed_once:
            await self.clock.sleep(delay * (0.5 + self.rng.random()))
            delay *= 2
        while not self._closed:
            try:
                await replica.put(key, data, if_absent=True)
                return
            except ObjectExists:
                return  # our own earlier attempt landed (keys are unique per epoch)
            except (Unavailable, Indeterminate, OSError) as e:
                log.debug("chunk %s on %s: %s; retrying", key, replica.name, e)
            await self.clock.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 1.0)
        raise asyncio.CancelledError

    async def _validate_lease(self) -> None:
        """Wait for a lease read that started after this call; raise Fenced if lost.

        With no read in flight the read runs inline (a local metadata store answers
        without suspending); callers arriving while one is in flight share the next."""
        if self._checking:
            fut = asyncio.get_running_loop().create_future()
            self._check_waiters.append(fut)
            await fut
            return
        self._checking = True
        try:
            err = await self._read_lease()
        finally:
            self._checking = False
            if self._check_waiters and (self._check_task is None or self._check_task.done()):
                self._check_task = asyncio.get_running_loop().create_task(self._check_loop())
        if err is not None:
            raise err

    async def _read_lease(self) -> BaseException | None:
        """Read the lease row: None if it is still ours, else the error to answer with.

        A read that fails (metadata unreachable for a moment) is retried, with backoff, for
        as long as it takes: the acks wait. Giving up would fail the channel for good, as
        if it had been fenced, over a blip of the metadata store."""
        delay = 0.005
        while True:
            try:
                cur = await self.metadata.get(self.lease_key)
            except (S2Error, OSError) as e:
                if self._closed or isinstance(e, Closed):
                    return Indeterminate(f"lease check failed: {e}")
                log.warning("channel %s: lease check failed, retrying in %.0f ms: %s",
                            self.channel, delay * 1e3, e)
                await self.clock.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            try:
                if cur is not None and cur.version == self.lease_version:
                    return self._fenced  # the row we wrote last: still ours (no decode)
                if cur is None or LeaseState.decode(cur.value).epoch != self.epoch:
                    self._fenced = Fenced(f"channel {self.channel}: epoch {self.epoch} was "
                                          "superseded by a newer owner")
                return self._fenced
            except Exception as e:  # an unreadable lease row: we cannot vouch for the ack
                return Indeterminate(f"lease check failed: {e}")

    async def _check_loop(self) -> None:
        while self._check_waiters:
            waiters, self._check_waiters = self._check_waiters, []
            self._checking = True
            try:
                err = await self._read_lease()
            finally:
                self._checking = False
            for w in waiters:
                if not w.done():
                    if err is None:
                        w.set_result(None)
                    else:
                        w.set_exception(err)

    # ------------------------------------------------------- floor and garbage

    async def advance_floor(self, floor: Pos, ops: list[Op]) -> list[int]:
        """Atomically move the offload floor and apply `ops` (segment catalog rows).

        Conditional on the lease version, so a fenced writer cannot publish."""
        # ends of epochs below the floor say nothing the floor does not (every chunk below
        # it is dead): dropped, so the row does not grow with every restart
        ends = {e: end for e, end in self.lease.ends.items() if e >= floor[0]}
        new = LeaseState(self.lease.epoch, ends, floor, self.owner)
        batch = [Op("put", self.lease_key, new.encode(), self.lease_version), *ops]
        try:
            versions = await self.metadata.write_batch(batch)
        except VersionMismatch as e:
            if e.key == self.lease_key:
                self._fenced = Fenced(f"channel {self.channel}: lease lost")
                raise self._fenced from e
            raise
        self.lease = new
        self.lease_version = versions[0]
        return versions

    async def _write_lease(self) -> None:
        try:
            self.lease_version = await self.metadata.put(self.lease_key, self.lease.encode(),
                                                         self.lease_version)
        except VersionMismatch as e:
            raise Fenced(f"channel {self.channel}: lease taken during recovery") from e

    async def collect_garbage(self, slices: Slices | None = None) -> None:
        """Delete chunks below the floor and chunks past the end of old epochs, in time
        slices (thousands of small chunks: appends run in between)."""
        floor = self.lease.floor
        ends = self.lease.ends
        slices = slices or Slices(self.clock)
        keep, drop = [], []
        written = self._written
        n = len(written)  # (writes append to it meanwhile)
        for i in range(n):
            if not i & 255:
                await slices.tick()
            pos = written[i]
            end = ends.get(pos[0])
            dead = pos < floor or (end is not None and pos[1] >= end)
            (drop if dead else keep).append(pos)
        self._written = keep + written[n:]
        for i in range(0, len(drop), _GC_BATCH):
            await slices.tick()
            keys = [chunk_key(self.channel, *pos) for pos in drop[i:i + _GC_BATCH]]
            for replica in self.replicas:
                await self._delete_chunks(replica, keys, slices)
        await slices.free(drop)

    @staticmethod
    async def _delete_chunks(replica: ObjectStore, keys: list[str], slices: Slices) -> None:
        """Best effort: a chunk left behind is deleted again by a later collection."""
        delete_many = getattr(replica, "delete_many", None)
        if delete_many is not None:  # (a local log: one call for the lot)
            try:
                await delete_many(keys)
            except (S2Error, OSError) as e:
                log.debug("gc of %d chunks on %s failed: %s", len(keys), replica.name, e)
            return
        for key in keys:
            await slices.tick()
            try:
                await replica.delete(key)
            except (S2Error, OSError, ObjectNotFound) as e:
                log.debug("gc of %s on %s failed: %s", key, replica.name, e)

    async def close(self) -> None:
        """Stop background replication (acked chunks are already on a quorum)."""
        pending = [t for t in self._background if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=1)
        self._closed = True
        for t in list(self._background):
            t.cancel()
        if self._check_task:
            self._check_task.cancel()
