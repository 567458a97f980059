"""The group coordinator: every group of this broker, their offsets and their journal.

Journal record kinds (JSON objects, applied in stream order):

    {"k": "g",  "g": id, "v": {...}}   a group's state (classic or consumer), replacing it
    {"k": "gd", "g": id}               the group and its offsets are deleted
    {"k": "o",  "g": id, "o": [[topic, partition, offset, leader_epoch, metadata, ms]...]}
    {"k": "od", "g": id, "o": [[topic, partition]...]}
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from broker.groups.classic import COMPLETING, PREPARING, ClassicGroup
from broker.groups.consumer import ConsumerGroup
from broker.groups.journal import Journal, partition_of
from broker.groups.offsets import MAX_METADATA_BYTES, OffsetTable
from broker.protocol.errors import ErrorCode as E
from s2core.errors import S2Error

log = logging.getLogger(__name__)


@dataclass
class GroupConfig:
    """Coordinator settings (Kafka's group.* broker configs)."""

    min_session_timeout_ms: int = 6000
    # group.initial.rebalance.delay.ms (Kafka: 3000): 0 keeps decision 0006's immediate
    # first join phase; librdkafka's suite (e.g. test 0118) is written for Kafka's default
    initial_rebalance_delay_ms: int = 0
    max_session_timeout_ms: int = 1_800_000
    consumer_session_timeout_ms: int = 45_000       # group.consumer.session.timeout.ms
    consumer_heartbeat_interval_ms: int = 1000      # Kafka: 5000; cheap here, converges faster
    reap_interval_s: float = 0.1
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000  # offsets.retention.minutes (7 days)
    cleanup_interval_s: float = 60.0


class GroupCoordinator:
    """Owns the groups; services call it. Start before serving, stop after."""

    def __init__(self, broker, config: GroupConfig | None = None) -> None:
        self.broker = broker
        self.config = config or GroupConfig()
        self.clock = broker.store.clock
        self.groups: dict[str, ClassicGroup | ConsumerGroup] = {}
        self.offsets = OffsetTable()
        self.journal = Journal(broker.store, broker.basin, self.live_records)
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task] = set()   # work that must finish even if its
        self._flusher: asyncio.Task | None = None  # requester disconnects
        self._reaper: asyncio.Task | None = None
        self._live: set[str] = set()   # groups that may have members: the reaper's round
        self._empty_since: dict[str, int] = {}   # group -> when cleanup first saw it empty
        self._stored: dict[str, dict] = {}       # group -> its state as last made durable
        self._cleaner: asyncio.Task | None = None

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        t0 = self.clock.monotonic()
        cluster = self.broker.cluster
        n = await self.journal.replay(
            self.apply, (lambda i: cluster.place("group-journal", i)) if cluster.enabled
            else None)
        log.info("group coordinator loaded %d records, %d groups, %d offsets in %.3fs", n,
                 len(self.groups), sum(len(v) for v in self.offsets.groups.values()),
                 self.clock.monotonic() - t0)
        self._reaper = asyncio.get_running_loop().create_task(self._reap())
        self._cleaner = asyncio.get_running_loop().create_task(self._cleanup())

    async def stop(self) -> None:
        for t in (self._reaper, self._cleaner):
            if t is not None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.journal.close()

    def now(self) -> float:
        return self.clock.monotonic()

    # ----------------------------------------------------------------- cluster

    def not_here(self, gid: str) -> bool:
        """Another broker coordinates `gid` (in a cluster): NOT_COORDINATOR."""
        return not self.journal.parts[partition_of(gid)].local

    async def coordinator_of(self, gid: str) -> int | None:
        """The node that coordinates `gid` (None: nobody right now)."""
        return await self.coordinator_of_partition(partition_of(gid))

    async def coordinator_of_partition(self, index: int) -> int | None:
        """The node that serves journal partition `index` (None: nobody right now)."""
        return await self.broker.cluster.stream_leader(self.journal.parts[index].stream)

    async def adopt_channel(self, channel: str) -> None:
        """Load the groups whose journal streams are on `channel` (just adopted)."""
        done = await self.journal.replay_channel(channel, self.apply)
        if done:
            log.info("coordinating the groups of journal partitions %s now", done)

    def release_channel(self, channel: str) -> None:
        """Forget the groups whose journal streams are on `channel` (served elsewhere)."""
        self.release_partitions(set(self.journal.release_channel(channel)))

    def release_partitions(self, parts: set[int]) -> None:
        """Forget the groups of these journal partitions (served elsewhere now)."""
        if not parts:
            return
        for index in parts:
            self.journal.parts[index].local = False
        gone = [g for g in set(self.groups) | set(self.offsets.groups)
                if partition_of(g) in parts]
        for gid in gone:
            group = self.groups.pop(gid, None)
            if isinstance(group, ClassicGroup):
                group.abandon()
            self._stored.pop(gid, None)
            self._live.discard(gid)
            self._dirty.discard(gid)
            self.offsets.drop_group(gid)
        log.info("no longer coordinating the groups of journal partitions %s (%d groups)",
                 sorted(parts), len(gone))

    async def follow_moves(self) -> None:
        """Take up or let go of journal partitions whose streams moved (in a cluster, at
        every heartbeat: a balancing move by this broker or another)."""
        txn = self.broker.extensions["txn"]
        for part in self.journal.parts:
            try:
                moved = await self.journal.follow(part, self.apply)
            except S2Error as e:  # (the next beat looks again)
                log.info("journal partition %d: %s", part.index, e)
                continue
            if moved is True:
                log.info("coordinating the groups of journal partition %d now", part.index)
                await txn.adopt_partitions({part.index})
            elif moved is False:
                self.release_partitions({part.index})
                txn.release_partitions({part.index})

    def new_member_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.UUID(int=self.broker.store.rng.getrandbits(128))}"

    # ----------------------------------------------------------------- journal

    def apply(self, rec: dict) -> None:
        kind, gid = rec["k"], rec["g"]
        if kind == "o":
            self.offsets.put_rows(gid, rec["o"])
        elif kind == "od":
            self.offsets.delete_rows(gid, rec["o"])
        elif kind == "gd":
            self.groups.pop(gid, None)
            self._stored.pop(gid, None)
            self.offsets.drop_group(gid)
        elif kind == "g":
            v = self._stored[gid] = rec["v"]
            group = self._new_group(gid, v["type"])
            group.restore(v)
            self.groups[gid] = group
            self._live.add(gid)
        else:
            raise ValueError(f"unknown group journal record kind {kind!r}")

    def live_records(self, partition: int) -> list[dict]:
        out = []
        names = {g for g in self.groups if partition_of(g) == partition}
        names |= {g for g in self.offsets.groups if partition_of(g) == partition}
        for gid in sorted(names):
            # the group as last stored, not as now: a group in the middle of a rebalance
            # must come back at its last stable point
            stored = self._stored.get(gid) if gid in self.groups else None
            if stored is not None:
                out.append({"k": "g", "g": gid, "v": stored})
            out.extend(self.offsets.snapshot_records(gid))
        return out

    async def persist(self, group) -> None:
        """Store the group's current state; returns once durable."""
        gid = group.group_id
        self._dirty.discard(gid)
        v = group.to_json()
        await self.journal.write(gid, [{"k": "g", "g": gid, "v": v}],
                                 lambda: self._stored.__setitem__(gid, v))

    def changed(self, group) -> None:
        """Store the group soon (membership changed outside a request that waits for it)."""
        self._dirty.add(group.group_id)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._dirty:
            gid = self._dirty.pop()
            group = self.groups.get(gid)
            if group is None or (isinstance(group, ClassicGroup)
                                 and group.state in (PREPARING, COMPLETING)):
                continue  # a classic group is stored at its next stable point
            try:
                await self.persist(group)
            except Exception:
                log.exception("storing group %s failed", gid)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            now = self.now()
            for gid in list(self._live):
                group = self.groups.get(gid)
                if group is None:
                    self._live.discard(gid)
                    continue
                try:
                    if group.expire(now):
                        self.changed(group)
                except Exception:  # one group's bug must not stop the reaper
                    log.exception("expiring members of group %s failed", gid)
                if group.is_empty() and not getattr(group, "pending", None):
                    self._live.discard(gid)

    async def _cleanup(self) -> None:
        while True:
            await asyncio.sleep(self.config.cleanup_interval_s)
            try:
                await self.expire_groups(self.clock.now_ms())
            except Exception:
                log.exception("expiring old offsets failed")

    async def expire_groups(self, now_ms: int) -> list[str]:
        """Delete groups that are empty and whose offsets are older than the retention,
        counted from the later of their newest commit and the group becoming empty
        (KIP-211); empty groups without offsets go at once. Returns the deleted ids."""
        cutoff = now_ms - self.config.offsets_retention_ms
        expired = []
        for gid in set(self.groups) | set(self.offsets.groups):
            group = self.groups.get(gid)
            if group is not None and (not group.is_empty() or getattr(group, "pending", None)):
                self._empty_since.pop(gid, None)
                continue
            since = self._empty_since.setdefault(gid, now_ms)
            newest = max((e.commit_ms for e in self.offsets.of_group(gid).values()),
                         default=None)
            if newest is None or max(since, newest) <= cutoff:
                expired.append(gid)
        done = []
        for gid, code in await self.delete_groups(expired):
            if code == E.NONE:
                self._empty_since.pop(gid, None)
                done.append(gid)
        if done:
            log.info("expired %d empty groups and their offsets", len(done))
        return done

    # ------------------------------------------------------------------ groups

    def _new_group(self, gid: str, kind: str):
        if kind == "classic":
            return ClassicGroup(gid, self.now, self.new_member_id, self.changed,
                                self.config.initial_rebalance_delay_ms)
        assert kind == "consumer", kind
        return ConsumerGroup(gid, self)

    def group(self, gid: str):
        return self.groups.get(gid)

    def classic(self, gid: str, create: bool) -> ClassicGroup | None | int:
        """The classic group `gid` (created if asked), None, or an error code when `gid`
        is a consumer (KIP-848) group."""
        group = self.groups.get(gid)
        if isinstance(group, ConsumerGroup):
            if not group.is_empty() or not create:
                return E.GROUP_ID_NOT_FOUND if not create else E.INCONSISTENT_GROUP_PROTOCOL
            group = None  # an empty consumer group turns classic (KIP-848 downgrade)
        if group is None and create:
            group = self.groups[gid] = self._new_group(gid, "classic")
        if group is not None:
            self._live.add(gid)
        return group

    def consumer(self, gid: str, create: bool) -> ConsumerGroup | None | int:
        group = self.groups.get(gid)
        if isinstance(group, ClassicGroup):
            if not group.is_empty():
                return E.GROUP_ID_NOT_FOUND
            group = None  # an empty classic group turns consumer (KIP-848 upgrade)
        if group is None and create:
            group = self.groups[gid] = self._new_group(gid, "consumer")
        if group is not None:
            self._live.add(gid)
        return group

    def forget(self, gid: str) -> None:
        """Drop a group that was created by a refused request (never stored)."""
        group = self.groups.get(gid)
        assert group is not None and group.is_empty(), "only empty groups are forgotten"
        if not self.offsets.has_group(gid):
            del self.groups[gid]

    def check_session_timeout(self, ms: int) -> bool:
        return self.config.min_session_timeout_ms <= ms <= self.config.max_session_timeout_ms

    def spawn(self, coro) -> asyncio.Task:
        """Run `coro` now, owned by the coordinator (awaited at stop)."""
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def sync_leader(self, group: ClassicGroup, fut: asyncio.Future):
        """Store the leader's assignment, then hand it to every member."""
        gen = group.generation
        try:
            await self.persist(group)
        except Exception:
            log.exception("storing group %s failed", group.group_id)
            group.finish_sync(gen, E.COORDINATOR_NOT_AVAILABLE)
        else:
            group.finish_sync(gen)
        return await fut

    async def delete_groups(self, gids: list[str]) -> list[tuple[str, int]]:
        out = []
        for gid in gids:
            group = self.groups.get(gid)
            if group is None and not self.offsets.has_group(gid):
                out.append((gid, E.GROUP_ID_NOT_FOUND))
                continue
            if group is not None and not group.is_empty():
                out.append((gid, E.NON_EMPTY_GROUP))
                continue
            try:
                await self.journal.write(gid, [{"k": "gd", "g": gid}],
                                         lambda gid=gid: self.apply({"k": "gd", "g": gid}))
            except Exception:
                log.exception("deleting group %s failed", gid)
                out.append((gid, E.COORDINATOR_NOT_AVAILABLE))
                continue
            out.append((gid, E.NONE))
        return out

    # ----------------------------------------------------------------- offsets

    def commit_error(self, gid: str, generation: int, member_id: str,
                     instance_id: str | None, version: int) -> int:
        """Kafka's validation of an OffsetCommit against the group's membership."""
        group = self.groups.get(gid)
        if group is None:
            return E.NONE if generation < 0 else E.ILLEGAL_GENERATION
        if isinstance(group, ConsumerGroup):
            return group.validate_commit(member_id, generation, version)
        if group.fenced(member_id, instance_id):
            return E.FENCED_INSTANCE_ID
        if generation < 0 and group.is_empty():
            return E.NONE
        if member_id not in group.members:
            return E.UNKNOWN_MEMBER_ID
        if generation != group.generation:
            return E.ILLEGAL_GENERATION
        if group.state == "CompletingRebalance":
            return E.REBALANCE_IN_PROGRESS
        group.touch(member_id)
        return E.NONE

    async def commit(self, gid: str, rows: list[list]) -> None:
        """Store offsets; returns once durable and visible."""
        await self.journal.wait(await self.submit_commit(gid, rows))

    async def submit_commit(self, gid: str, rows: list[list]):
        """Sequence an offset commit now (in request order); `journal.wait` for it."""
        records = [{"k": "o", "g": gid, "o": rows}]
        stored = None
        if gid not in self.groups:
            # a standalone commit: the group exists from now on (Empty, as in Kafka)
            group = self.groups[gid] = self._new_group(gid, "classic")
            stored = group.to_json()
            records.insert(0, {"k": "g", "g": gid, "v": stored})

        def apply() -> None:
            if stored is not None:
                self._stored.setdefault(gid, stored)
            self.offsets.put_rows(gid, rows)

        return await self.journal.submit(gid, records, apply)

    async def delete_offsets(self, gid: str, keys: list[list]) -> None:
        await self.journal.write(gid, [{"k": "od", "g": gid, "o": keys}],
                                 lambda: self.offsets.delete_rows(gid, keys))

    def fetch_error(self, gid: str, member_id: str | None, member_epoch: int) -> int:
        group = self.groups.get(gid)
        if isinstance(group, ConsumerGroup):
            return group.validate_fetch(member_id, member_epoch)
        return E.NONE


__all__ = ["MAX_METADATA_BYTES", "GroupConfig", "GroupCoordinator"]
