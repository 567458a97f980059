"""The group journal on an in-memory s2core: durable writes, replay after a restart,
compaction (snapshot + trim) that keeps replay proportional to the live state."""
from __future__ import annotations

import asyncio

import pytest

from broker.groups.journal import PARTITIONS, STREAM_PREFIX, partition_of
from broker.kafka import Broker, BrokerConfig
from s2core.channel import ChannelConfig
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.store import ChannelSpec, StreamStore

BASIN = "test-basin"


class Env:
    """Memory backends that outlive a store (so a broker can 'restart' on them)."""

    def __init__(self) -> None:
        self.metadata = MemoryMetadataStore()
        self.segments = MemoryObjectStore("segments")
        self.replicas = [MemoryObjectStore(f"r{i}") for i in range(3)]

    async def broker(self) -> Broker:
        cfg = ChannelConfig(offload_target_bytes=4096, offload_interval_s=0.02)
        store = await StreamStore.open(self.metadata, self.segments,
                                       [ChannelSpec("ch0", self.replicas, 2, cfg)])
        b = Broker(store, BrokerConfig(basin=BASIN))
        await b.start()
        return b


async def close(b: Broker) -> None:
    await b.stop()
    await b.store.close()


@pytest.fixture
def env():
    return Env()


def rows(topic: str, n: int, base: int = 0) -> list[list]:
    return [[topic, p, base + p, -1, f"meta-{p}", 0] for p in range(n)]


async def test_offsets_and_groups_survive_restart(env):
    b = await env.broker()
    coord = b.extensions["groups"]
    await coord.commit("g1", rows("t", 3))
    await coord.commit("g1", [["t", 1, 99, 4, "newer", 5]])
    await coord.commit("g2", rows("u", 2))
    await coord.delete_offsets("g2", [["u", 0]])
    assert await coord.delete_groups(["g2"]) == [("g2", 0)]
    await close(b)

    b = await env.broker()
    coord = b.extensions["groups"]
    table = coord.offsets.of_group("g1")
    assert {k: (e.offset, e.leader_epoch, e.metadata) for k, e in table.items()} == {
        ("t", 0): (0, -1, "meta-0"), ("t", 1): (99, 4, "newer"), ("t", 2): (2, -1, "meta-2")}
    assert not coord.offsets.has_group("g2") and coord.group("g2") is None
    assert coord.group("g1").state == "Empty"
    await close(b)


async def test_compaction_trims_and_replays_the_same_state(env):
    b = await env.broker()
    coord = b.extensions["groups"]
    coord.journal.compact_slack = 50
    group = "busy"
    part = coord.journal.parts[partition_of(group)]
    for i in range(400):
        await coord.commit(group, [["t", i % 4, i, -1, f"m{i}", 0]])
    await asyncio.gather(*coord.journal._bg)
    assert part.first_seq > 0, "the stream was never trimmed"
    first = await b.store.first_seq(BASIN, part.stream)
    tail = (await b.store.check_tail(BASIN, part.stream)).seq_num
    assert first == part.first_seq and tail - first < 150
    expected = {k: e.offset for k, e in coord.offsets.of_group(group).items()}
    assert expected == {("t", p): 396 + p for p in range(4)}
    await close(b)

    b = await env.broker()
    coord = b.extensions["groups"]
    assert {k: e.offset for k, e in coord.offsets.of_group(group).items()} == expected
    assert coord.offsets.of_group(group)[("t", 3)].metadata == "m399"
    await close(b)


async def test_concurrent_commits_apply_in_sequence_order(env):
    b = await env.broker()
    coord = b.extensions["groups"]
    await asyncio.gather(*(coord.commit("g", [["t", 0, i, -1, "", 0]]) for i in range(200)))
    assert coord.offsets.get("g", "t", 0).offset == 199
    await close(b)
    b = await env.broker()
    assert b.extensions["groups"].offsets.get("g", "t", 0).offset == 199
    await close(b)


async def test_journal_streams_are_internal_and_partitioned(env):
    b = await env.broker()
    streams, _ = await b.store.list_streams(BASIN, prefix=STREAM_PREFIX)
    assert sorted(s.name for s in streams) == sorted(f"{STREAM_PREFIX}{i}"
                                                     for i in range(PARTITIONS))
    assert "kafka-internal" not in "".join(b.topics.topics)
    await close(b)


async def test_offsets_of_empty_groups_expire_after_the_retention(env):
    b = await env.broker()
    coord = b.extensions["groups"]
    coord.config.offsets_retention_ms = 1000
    await coord.commit("old", [["t", 0, 5, -1, "", 1_000]])   # committed at t=1s
    coord.groups["none"] = coord._new_group("none", "classic")   # empty, no offsets
    assert await coord.expire_groups(1_500) == ["none"]      # "old" seen empty at 1.5s
    await coord.commit("fresh", [["t", 0, 7, -1, "", 2_400]])
    assert await coord.expire_groups(2_400) == []             # 0.9s after old went empty
    assert await coord.expire_groups(2_500) == ["old"]
    assert coord.offsets.has_group("fresh") and not coord.offsets.has_group("old")
    await close(b)
    b = await env.broker()
    coord = b.extensions["groups"]
    assert coord.group("old") is None and coord.group("fresh") is not None
    await close(b)


async def test_replay_skips_records_that_are_not_ours(env):
    from s2core.records import AppendRecord
    b = await env.broker()
    coord = b.extensions["groups"]
    await coord.commit("g", rows("t", 1))
    stream = coord.journal.parts[partition_of("g")].stream
    await b.store.append(BASIN, stream, [AppendRecord(body=b"not json"),
                                         AppendRecord(body=b'{"k": "?", "g": "g"}')])
    await coord.commit("g", [["t", 0, 42, -1, "", 0]])
    await close(b)
    b = await env.broker()
    assert b.extensions["groups"].offsets.get("g", "t", 0).offset == 42
    await close(b)


async def test_snapshot_keeps_a_rebalancing_group_at_its_last_stored_point(env):
    from types import SimpleNamespace
    b = await env.broker()
    coord = b.extensions["groups"]

    def join(member_id=""):
        return SimpleNamespace(group_id="g", session_timeout_ms=6000,
                               rebalance_timeout_ms=10000, member_id=member_id,
                               group_instance_id=None, protocol_type="consumer",
                               protocols=[SimpleNamespace(name="range", metadata=b"")])

    group = coord.classic("g", create=True)
    a = group.join(join(), 3, "a", "/h").result().member_id
    fut, leader = group.sync(SimpleNamespace(
        member_id=a, group_instance_id=None, generation_id=1, protocol_type=None,
        protocol_name=None, assignments=[SimpleNamespace(member_id=a, assignment=b"gen1")]), 3)
    assert leader and (await coord.sync_leader(group, fut)).assignment == b"gen1"
    fb = group.join(join(), 3, "b", "/h")
    group.join(join(a), 3, "a", "/h")
    assert fb.done() and group.state == "CompletingRebalance" and group.generation == 2
    await coord.journal.compact(partition_of("g"))
    await close(b)

    b = await env.broker()
    group = b.extensions["groups"].group("g")
    assert (group.state, group.generation, list(group.members)) == ("Stable", 1, [a])
    assert group.members[a].assignment == b"gen1"
    await close(b)
