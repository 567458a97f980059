"""The delayed first join phase of a classic group (Kafka's group.initial.rebalance.delay.ms):
members that arrive together share the first generation, so none of them is revoked and
rebalanced right after it got its partitions (librdkafka's test 0118 relies on this)."""
from __future__ import annotations

from types import SimpleNamespace

from broker.groups.classic import COMPLETING, EMPTY, PREPARING, STABLE, ClassicGroup
from broker.groups.coordinator import GroupConfig, GroupCoordinator
from broker.kafka import Broker, BrokerConfig
from broker.protocol.errors import ErrorCode as E
from s2core.channel import ChannelConfig
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.store import ChannelSpec, StreamStore

DELAY_MS = 3000


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def join_req(member_id="", rebalance_timeout_ms=10_000):
    return SimpleNamespace(group_id="g", session_timeout_ms=6000,
                           rebalance_timeout_ms=rebalance_timeout_ms, member_id=member_id,
                           group_instance_id=None, protocol_type="consumer",
                           protocols=[SimpleNamespace(name="range", metadata=b"m")])


def group(clock: Clock) -> ClassicGroup:
    ids = iter(range(1000))
    return ClassicGroup("g", clock, lambda p: f"{p}-{next(ids)}", lambda g: None,
                        initial_delay_ms=DELAY_MS)


def join_new(g: ClassicGroup, client: str, **kw):
    """A v4+ client's join: MEMBER_ID_REQUIRED, then the join with the given id."""
    first = g.join(join_req(**kw), 5, client, "/h")
    assert first.error == E.MEMBER_ID_REQUIRED
    return g.join(join_req(first.member_id, **kw), 5, client, "/h")


def at(g: ClassicGroup, clock: Clock, t: float) -> None:
    clock.t = t
    g.expire(t)


def sync_all(g: ClassicGroup, futs) -> None:
    for f in futs:
        r = f.result()
        g.sync(SimpleNamespace(member_id=r.member_id, group_instance_id=None,
                               generation_id=r.generation, protocol_type=None,
                               protocol_name=None, assignments=[]), 5)
    g.finish_sync(g.generation)
    assert g.state == STABLE


async def test_a_lone_first_member_waits_one_delay():
    clock = Clock()
    g = group(clock)
    fa = join_new(g, "a")
    assert g.state == PREPARING and not fa.done()
    at(g, clock, 2.9)
    assert not fa.done()
    at(g, clock, 3.0)
    assert fa.done() and fa.result().generation == 1 and g.state == COMPLETING


async def test_members_arriving_during_the_delay_share_the_first_generation():
    clock = Clock()
    g = group(clock)
    fa = join_new(g, "a")
    clock.t = 0.005
    fb = join_new(g, "b")
    assert not fa.done() and not fb.done(), "every member has joined, yet the delay holds"
    at(g, clock, 3.0)   # b arrived during the first delay: one more delay
    assert not fa.done() and not fb.done()
    at(g, clock, 5.9)
    assert not fa.done()
    at(g, clock, 6.0)   # nobody new during the second delay: done
    ra, rb = fa.result(), fb.result()
    assert ra.generation == rb.generation == 1 and len(ra.members) == 2
    sync_all(g, [fa, fb])
    # later rebalances of the non-empty group are not delayed
    fc = join_new(g, "c")
    fa2 = g.join(join_req(ra.member_id), 5, "a", "/h")
    assert not fc.done()
    fb2 = g.join(join_req(rb.member_id), 5, "b", "/h")
    assert fa2.done() and fb2.done() and fc.done() and g.generation == 2


async def test_extensions_stop_at_the_rebalance_timeout():
    clock = Clock()
    g = group(clock)
    futs = [join_new(g, "a", rebalance_timeout_ms=4000)]  # 1 s left after the first delay
    clock.t = 1
    futs.append(join_new(g, "b", rebalance_timeout_ms=4000))
    at(g, clock, 3.0)   # extended by min(delay, 1 s)
    assert not any(f.done() for f in futs)
    clock.t = 3.5
    futs.append(join_new(g, "c", rebalance_timeout_ms=4000))
    at(g, clock, 4.0)   # c arrived, but nothing is left to extend by
    assert all(f.done() for f in futs)
    assert {f.result().generation for f in futs} == {1} and len(g.members) == 3


async def test_a_group_whose_members_all_left_during_the_delay_is_empty_at_once():
    clock = Clock()
    g = group(clock)
    fa = join_new(g, "a")
    mid = next(iter(g.members))
    assert g.leave(mid, None) == E.NONE
    g.after_leave()
    assert fa.result().error == E.UNKNOWN_MEMBER_ID
    assert g.state == EMPTY and not g.members
    fb = join_new(g, "b")  # an empty group delays its next first phase again
    at(g, clock, 2.0)
    assert not fb.done()
    at(g, clock, 3.0)
    assert fb.result().error == E.NONE


async def test_the_coordinator_passes_its_delay_to_classic_groups():
    assert GroupConfig().initial_rebalance_delay_ms == 0  # decision 0006: no delay
    store = await StreamStore.open(MemoryMetadataStore(), MemoryObjectStore("segments"), [
        ChannelSpec("ch0", [MemoryObjectStore(f"r{i}") for i in range(3)], 2,
                    ChannelConfig())])
    b = Broker(store, BrokerConfig(basin="test-basin"))
    b.extensions["groups"] = GroupCoordinator(b, GroupConfig(initial_rebalance_delay_ms=3000))
    await b.start()
    try:
        assert b.extensions["groups"].classic("g", create=True).initial_delay_ms == 3000
    finally:
        await b.stop()
        await store.close()
