"""Moving partitions between the brokers of a cluster (docs/decisions/0021-partition-reassignment.md).

Kafka's AlterPartitionReassignments names a partition's new replica list; here its first
broker becomes the partition's leader: the partition's stream moves to that broker's
channel (`StreamStore.move_stream`: seal the current streamlet, offload what the segments
do not have yet, link a new streamlet on the target's channel). Nothing is copied but the
tail the segments lacked, so a move takes moments, whatever the partition's size. Only
the partition's current leader can move it (it holds the channel the stream is on):
another broker forwards the request to it over the brokers' own listener
(broker/interbroker.py).

A move in progress is recorded in `kafka/reassign/<topic>/<partition>` (the target replica
list and the leader it leaves) before it starts and removed when it is done, which is what
ListPartitionReassignments lists. A leader stopped in the middle leaves the stream sealed;
whoever serves the stream next (the restarted broker, or the one that adopts its channel)
finishes the move. The replica list asked for is kept with the topic, and Metadata reports
it for the partition once its leader is the list's first broker.
"""
from __future__ import annotations

import asyncio
import json
import logging

from broker.cluster import channel_name
from broker.protocol.errors import ErrorCode as E
from broker.protocol.messages.alter_partition_reassignments_request import (
    AlterPartitionReassignmentsRequest,
    ReassignablePartition,
    ReassignableTopic,
)
from broker.topics import stream_name
from broker.transactions import GROUPS_TOPIC
from s2core.errors import NotServed, S2Error
from s2core.metadata import list_all

log = logging.getLogger(__name__)

PREFIX = "kafka/reassign/"


class Reassigner:
    """Partition moves led by this broker."""

    def __init__(self, broker) -> None:
        self.broker = broker
        self._moving: dict[tuple[str, int], asyncio.Task] = {}

    @property
    def metadata(self):
        return self.broker.store.metadata

    async def ongoing(self) -> dict[tuple[str, int], dict]:
        """(topic, partition) -> {"replicas": [...], "from": node}: moves not finished."""
        out = {}
        for key, v in await list_all(self.metadata, PREFIX):
            topic, _, p = key[len(PREFIX):].rpartition("/")
            out[(topic, int(p))] = json.loads(v.value)
        return out

    def check(self, replicas: list[int]) -> tuple[int, str] | None:
        """Why a replica list is refused (INVALID_REPLICA_ASSIGNMENT), or None."""
        if not replicas:
            return E.INVALID_REPLICA_ASSIGNMENT, "The replica list is empty."
        if len(set(replicas)) != len(replicas):
            return E.INVALID_REPLICA_ASSIGNMENT, "The replica list has duplicates."
        live = {n.node_id for n in self.broker.cluster.live_nodes()}
        gone = [r for r in replicas if r not in live]
        if gone:
            return E.INVALID_REPLICA_ASSIGNMENT, f"Brokers {gone} are not live."
        return None

    async def move(self, topic: str, p: int, replicas: list[int]) -> tuple[int, str | None]:
        """Move partition `p` of `topic` (led here) to `replicas[0]`; its error code."""
        b = self.broker
        target = replicas[0]
        if b.cluster.channel_leader(channel_name(target)) != target:
            return E.INVALID_REPLICA_ASSIGNMENT, f"Broker {target} does not serve its log."
        key = (topic, p)
        task = self._moving.get(key)
        if task is None or task.done():
            task = self._moving[key] = asyncio.get_running_loop().create_task(
                self._move(topic, p, replicas))
        try:
            await asyncio.shield(task)
        except NotServed:
            return E.NOT_LEADER_OR_FOLLOWER, "This broker does not lead the partition."
        except S2Error as e:
            return E.REQUEST_TIMED_OUT, f"The move failed and may be retried: {e}"
        finally:
            if task.done() and self._moving.get(key) is task:
                del self._moving[key]
        return E.NONE, None

    async def move_via_leader(self, topic: str, p: int, replicas: list[int],
                              leader: int) -> tuple[int, str | None]:
        """`move`, run by the partition's leader: here, or passed on to it."""
        if leader == self.broker.cluster.node_id:
            return await self.move(topic, p, replicas)
        resp = await self.broker.interbroker.call(leader, 45, 0, AlterPartitionReassignmentsRequest(
            timeout_ms=30000, topics=[ReassignableTopic(name=topic, partitions=[
                ReassignablePartition(partition_index=p, replicas=replicas)])]))
        for t in resp.responses if resp is not None else ():
            for r in t.partitions:
                if (t.name, r.partition_index) == (topic, p):
                    return r.error_code, r.error_message
        return E.REQUEST_TIMED_OUT, f"Broker {leader}, the partition's leader, did not answer."

    async def _move(self, topic: str, p: int, replicas: list[int]) -> None:
        b = self.broker
        row = f"{PREFIX}{topic}/{p}"
        await self.metadata.put(row, json.dumps({"replicas": replicas,
                                                 "from": b.cluster.node_id}).encode(), 0)
        if topic != GROUPS_TOPIC:
            await b.topics.set_replicas(topic, p, replicas)
        await self._finish(topic, p, replicas[0], row)

    def _stream(self, topic: str, p: int) -> str:
        """The stream of a partition; `__consumer_offsets` names the group journal's."""
        if topic == GROUPS_TOPIC:
            return self.broker.extensions["groups"].journal.parts[p].stream
        return stream_name(topic, p)

    async def _finish(self, topic: str, p: int, target: int, row: str) -> None:
        b = self.broker
        stream = self._stream(topic, p)
        h = await b.store._handle(b.basin, stream, serve=True)
        if h.chain[-1]["channel"] != channel_name(target):
            if h.chain[-1]["channel"] not in b.store.channels:
                raise NotServed(f"partition {topic}-{p} is led elsewhere")
            if topic == GROUPS_TOPIC:
                await self._let_journal_go(p)
            await b.store.move_stream(b.basin, stream, channel_name(target), remote=True)
            log.info("moved %s-%d to broker %d", topic, p, target)
        if topic == GROUPS_TOPIC:
            b.extensions["groups"].release_partitions({p})
            b.extensions["txn"].release_partitions({p})
        else:
            b.producers.forget(topic, p)
            b.extensions["txn"].forget_partition(topic, p)
        await self.metadata.delete(row)

    async def _let_journal_go(self, index: int) -> None:
        """Before a journal partition moves: its groups get NOT_COORDINATOR from now on
        (clients look for the coordinator again), and its writes under way finish."""
        part = self.broker.extensions["groups"].journal.parts[index]
        part.local = False
        async with part.lock:  # (no write is being sequenced)
            pending = list(part.pending)
        if pending:
            await asyncio.gather(*(e.settled for e in pending), return_exceptions=True)

    async def resume(self) -> None:
        """Finish the moves a stopped leader left, of the streams served here now."""
        b = self.broker
        for (topic, p), d in (await self.ongoing()).items():
            if topic != GROUPS_TOPIC and b.topics.get(topic) is None:
                await self.metadata.delete(f"{PREFIX}{topic}/{p}")
                continue
            try:
                h = await b.store._handle(b.basin, self._stream(topic, p), serve=True)
            except (S2Error, IndexError):
                continue
            target = d["replicas"][0]
            if h.chain[-1]["channel"] in b.store.channels or \
                    h.chain[-1]["channel"] == channel_name(target):
                log.info("finishing the move of %s-%d to broker %d", topic, p, target)
                try:
                    await self._finish(topic, p, target, f"{PREFIX}{topic}/{p}")
                except S2Error as e:
                    log.warning("finishing the move of %s-%d failed: %s", topic, p, e)

    async def balance_coordinators(self) -> None:
        """(The controller, at a heartbeat.) Move one group journal partition (its groups'
        and transactional ids' coordinator) from the broker serving the most to the one
        serving the fewest, when they differ by more than one. Only on a settled cluster:
        every live broker serves its own channel, and the set of live brokers has not
        changed for a session timeout (`Cluster.settled`)."""
        b = self.broker
        cluster, groups = b.cluster, b.extensions["groups"]
        live = [n.node_id for n in cluster.live_nodes()]
        if len(live) < 2 or not cluster.settled():
            return
        holders: dict[int, list[int]] = {n: [] for n in live}
        for part in groups.journal.parts:
            node = await groups.coordinator_of_partition(part.index)
            if node not in holders:
                return  # (a partition between brokers: later)
            holders[node].append(part.index)
        most = max(live, key=lambda n: (len(holders[n]), -n))
        least = min(live, key=lambda n: (len(holders[n]), n))
        if len(holders[most]) - len(holders[least]) <= 1:
            return
        index = holders[most][-1]
        log.info("moving group journal partition %d from broker %d to broker %d (balance)",
                 index, most, least)
        code, msg = await self.move_via_leader(GROUPS_TOPIC, index, [least], most)
        if code != E.NONE:
            log.info("moving group journal partition %d: %s", index, msg)
