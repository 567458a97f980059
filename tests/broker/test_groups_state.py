"""Group state machines without a broker: assignors, KIP-848 reconciliation (no partition
ever owned twice), and the classic join phase (completes when every known member rejoined,
or at the rebalance timeout)."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from broker.groups.assignors import range_assign, uniform_assign
from broker.groups.classic import COMPLETING, EMPTY, PREPARING, STABLE, ClassicGroup
from broker.groups.consumer import ConsumerGroup, HeartbeatError
from broker.groups.coordinator import GroupConfig
from broker.protocol.errors import ErrorCode as E

# ------------------------------------------------------------------ assignors


@pytest.mark.parametrize("assign", [range_assign, uniform_assign])
@pytest.mark.parametrize("members", [1, 2, 3, 5, 13])
def test_assignors_cover_every_partition_once_and_balance(assign, members):
    topics = {"a": 6, "b": 5, "c": 1}
    subs = {f"m{i}": set(topics) for i in range(members)}
    out = assign(subs, topics, {})
    owned = [(t, p) for m in out.values() for t, ps in m.items() for p in ps]
    assert sorted(owned) == sorted((t, p) for t, n in topics.items() for p in range(n))
    if assign is uniform_assign:
        loads = [sum(map(len, a.values())) for a in out.values()]
        assert max(loads) - min(loads) <= 1


def test_uniform_is_sticky_and_respects_subscriptions():
    topics = {"a": 6, "b": 6}
    subs = {"x": {"a", "b"}, "y": {"a", "b"}}
    first = uniform_assign(subs, topics, {})
    subs["z"] = {"a"}
    second = uniform_assign(subs, topics, first)
    assert not second["z"].get("b")
    moved = sum(len(ps - second[m].get(t, set())) for m in ("x", "y")
                for t, ps in first[m].items())
    assert moved <= 4  # only what z needs to take


# ------------------------------------------------------------ KIP-848 groups

class Topics:
    def __init__(self, **parts: int) -> None:
        self.topics = {n: SimpleNamespace(name=n, partitions=k, id=bytes([i + 1]) * 16)
                       for i, (n, k) in enumerate(sorted(parts.items()))}
        self.by_id = {t.id: t for t in self.topics.values()}


class FakeCoordinator:
    def __init__(self, **parts: int) -> None:
        self.broker = SimpleNamespace(topics=Topics(**parts))
        self.config = GroupConfig()
        self.t = 0.0
        self.n = 0

    def now(self) -> float:
        return self.t

    def new_member_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"


def hb(group, member_id, epoch, *, topics=None, owned=None, regex=None, instance=None):
    tp = None
    if owned is not None:
        ids = group.coordinator.broker.topics.topics
        tp = [SimpleNamespace(topic_id=ids[t].id, partitions=sorted(ps))
              for t, ps in owned.items()]
    req = SimpleNamespace(group_id="g", member_id=member_id, member_epoch=epoch,
                          instance_id=instance, rack_id=None, rebalance_timeout_ms=10000,
                          subscribed_topic_names=topics, subscribed_topic_regex=regex,
                          server_assignor=None, topic_partitions=tp)
    return group.heartbeat(req, 1, "client", "/host")


def names(group, parts):
    return {t: set(ps) for t, ps in parts.items()}


def test_kip848_members_converge_without_double_ownership():
    rng = random.Random(7)
    coord = FakeCoordinator(t=6, u=4)
    group = ConsumerGroup("g", coord)
    owned: dict[str, dict[str, set[int]]] = {}   # what each client holds
    epochs: dict[str, int] = {}

    def beat(mid):
        m, send = hb(group, mid, epochs[mid], owned=owned[mid])
        epochs[mid] = m.epoch
        if send is not None:
            owned[mid] = names(group, send)  # the client revokes/assigns as told
        held = [(t, p) for o in owned.values() for t, ps in o.items() for p in ps]
        assert len(held) == len(set(held)), f"a partition is owned twice: {owned}"

    for i in range(3):
        mid = f"m{i}"
        m, send = hb(group, mid, 0, topics=["t", "u"], owned={})
        epochs[mid], owned[mid] = m.epoch, names(group, send or {})
        for _ in range(30):
            beat(rng.choice(list(owned)))
    for _ in range(10):
        for mid in list(owned):
            beat(mid)
    assert group.state == "Stable"
    loads = sorted(sum(map(len, o.values())) for o in owned.values())
    assert loads == [3, 3, 4]
    # one leaves: its partitions go to the others only after it is gone
    m, _ = hb(group, "m1", -1)
    assert m.epoch == -1
    del owned["m1"], epochs["m1"]
    for _ in range(5):
        for mid in list(owned):
            beat(mid)
    assert sorted(sum(map(len, o.values())) for o in owned.values()) == [5, 5]


def test_kip848_epoch_checks():
    group = ConsumerGroup("g", FakeCoordinator(t=2))
    with pytest.raises(HeartbeatError) as e:
        hb(group, "x", 1)
    assert e.value.code == E.UNKNOWN_MEMBER_ID
    with pytest.raises(HeartbeatError) as e:
        hb(group, "x", 0)  # no subscription on the first heartbeat
    assert e.value.code == E.INVALID_REQUEST
    m, send = hb(group, "x", 0, topics=["t"])
    assert m.epoch == 1 and names(group, send) == {"t": {0, 1}}
    with pytest.raises(HeartbeatError) as e:
        hb(group, "x", 2)
    assert e.value.code == E.FENCED_MEMBER_EPOCH
    m, send = hb(group, "x", 1)
    assert m.epoch == 1 and send is None   # nothing changed: no assignment sent
    assert group.validate_commit("x", 0, 9) == E.STALE_MEMBER_EPOCH
    assert group.validate_commit("x", 2, 9) == E.FENCED_MEMBER_EPOCH
    assert group.validate_commit("x", 1, 8) == E.UNSUPPORTED_VERSION
    assert group.validate_commit("x", 1, 9) == E.NONE


def test_kip848_regex_picks_up_new_topics():
    coord = FakeCoordinator(logs_a=2)
    group = ConsumerGroup("g", coord)
    m, send = hb(group, "x", 0, regex="logs_.*")
    assert names(group, send) == {"logs_a": {0, 1}}
    coord.broker.topics = Topics(logs_a=2, logs_b=1, other=3)
    m, send = hb(group, "x", m.epoch)
    assert m.epoch == 2 and names(group, send) == {"logs_a": {0, 1}, "logs_b": {0}}


def test_kip848_static_member_rejoins_with_its_partitions():
    group = ConsumerGroup("g", FakeCoordinator(t=4))
    hb(group, "a1", 0, topics=["t"], instance="A")
    hb(group, "b1", 0, topics=["t"], instance="B")
    for _ in range(3):
        hb(group, "a1", group.members["a1"].epoch, owned=group.members["a1"].assigned)
        hb(group, "b1", group.members["b1"].epoch, owned=group.members["b1"].assigned)
    kept = {t: set(p) for t, p in group.members["a1"].assigned.items()}
    epoch = group.epoch
    hb(group, "a1", -2)   # a static member leaves for a while
    with pytest.raises(HeartbeatError) as e:
        hb(group, "b2", 0, topics=["t"], instance="B")   # B is still there
    assert e.value.code == E.UNRELEASED_INSTANCE_ID
    m, send = hb(group, "a2", 0, topics=["t"], instance="A")
    assert m.member_id == "a2" and names(group, send) == kept and group.epoch == epoch


# ------------------------------------------------------------ classic groups

class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def join_req(member_id="", instance=None, protocols=(("range", b"m"),)):
    return SimpleNamespace(group_id="g", session_timeout_ms=6000, rebalance_timeout_ms=10000,
                           member_id=member_id, group_instance_id=instance,
                           protocol_type="consumer",
                           protocols=[SimpleNamespace(name=n, metadata=m)
                                      for n, m in protocols])


def classic(clock):
    ids = iter(range(1000))
    return ClassicGroup("g", clock, lambda p: f"{p}-{next(ids)}", lambda g: None)


async def test_classic_join_completes_when_all_known_members_rejoined():
    clock = Clock()
    g = classic(clock)
    fa = g.join(join_req(), 3, "a", "/h")
    ra = fa.result()  # the first member completes at once: no initial delay
    assert ra.generation == 1 and g.state == COMPLETING and ra.leader == ra.member_id
    fb = g.join(join_req(), 3, "b", "/h")
    assert g.state == PREPARING and not fb.done()
    fa2 = g.join(join_req(ra.member_id), 3, "a", "/h")
    assert fa2.done() and fb.done()
    assert fa2.result().generation == fb.result().generation == 2
    assert len(fa2.result().members) == 2 and fb.result().members == []


async def test_classic_rebalance_timeout_drops_members_that_did_not_rejoin():
    clock = Clock()
    g = classic(clock)
    a = g.join(join_req(), 3, "a", "/h").result().member_id
    g.sync(SimpleNamespace(member_id=a, group_instance_id=None, generation_id=1,
                           protocol_type=None, protocol_name=None, assignments=[]), 3)
    g.finish_sync(1)
    assert g.state == STABLE
    fb = g.join(join_req(), 3, "b", "/h")
    clock.t = 5
    g.heartbeat(a, None, 1)  # a keeps its session alive but never rejoins
    assert g.expire(clock.t) is False and not fb.done()
    clock.t = 10.5
    g.expire(clock.t)
    assert fb.done() and fb.result().generation == 2 and list(g.members) != [a]
    assert a not in g.members


async def test_classic_protocol_selection_by_vote():
    g = classic(Clock())
    g.join(join_req(protocols=(("rr", b""), ("range", b""))), 3, "a", "/h")
    a = next(iter(g.members))
    f = [g.join(join_req(a, protocols=(("rr", b""), ("range", b""))), 3, "a", "/h")]
    f += [g.join(join_req(protocols=(("range", b""), ("rr", b""))), 3, c, "/h")
          for c in "bc"]
    f[0] = g.join(join_req(a, protocols=(("rr", b""), ("range", b""))), 3, "a", "/h")
    assert all(x.done() for x in f)
    assert g.protocol_name == "range"   # two votes to one
    assert g.join(join_req(protocols=(("sticky", b""),)), 3, "d", "/h").error == \
        E.INCONSISTENT_GROUP_PROTOCOL
    assert g.state == COMPLETING


async def test_classic_last_member_leaving_empties_the_group():
    g = classic(Clock())
    a = g.join(join_req(), 3, "a", "/h").result().member_id
    assert g.leave(a, None) == E.NONE
    g.after_leave()
    assert g.state == EMPTY and g.generation == 2 and not g.members
    assert g.leave(a, None) == E.UNKNOWN_MEMBER_ID
    req = join_req()
    req.protocol_type = "connect"  # an empty group takes the next member's protocol type
    r = g.join(req, 3, "c", "/h").result()
    assert r.error == E.NONE and g.protocol_type == r.protocol_type == "connect"


async def test_classic_join_phase_waits_for_members_given_an_id():
    clock = Clock()
    g = classic(clock)
    a = g.join(join_req(), 3, "a", "/h").result().member_id
    b = g.join(join_req(), 4, "b", "/h")
    c = g.join(join_req(), 4, "c", "/h")
    assert b.error == c.error == E.MEMBER_ID_REQUIRED and g.state == COMPLETING
    fb = g.join(join_req(b.member_id), 4, "b", "/h")
    fa = g.join(join_req(a), 4, "a", "/h")
    assert not fa.done(), "completed while c, given an id, had not joined yet"
    fc = g.join(join_req(c.member_id), 4, "c", "/h")
    assert fa.done() and fb.done() and fc.done()
    assert len(fa.result().members) == 3 and g.generation == 2
    # a member given an id that never comes back delays the phase by one session timeout
    d = g.join(join_req(), 4, "d", "/h")
    assert d.error == E.MEMBER_ID_REQUIRED
    fa = g.join(join_req(a, protocols=(("range", b"changed"),)), 4, "a", "/h")  # rebalance
    fb = g.join(join_req(b.member_id), 4, "b", "/h")
    fc = g.join(join_req(c.member_id), 4, "c", "/h")
    assert not fa.done()
    clock.t = 6.5
    g.expire(clock.t)
    assert fa.done() and fa.result().generation == 3 and len(g.members) == 3


async def test_classic_member_that_never_syncs_is_removed_at_the_rebalance_timeout():
    clock = Clock()
    g = classic(clock)
    a = g.join(join_req(), 3, "a", "/h").result().member_id
    fb = g.join(join_req(), 3, "b", "/h")
    g.join(join_req(a), 3, "a", "/h")
    b = fb.result().member_id
    fut, leader = g.sync(SimpleNamespace(member_id=a, group_instance_id=None, generation_id=2,
                                         protocol_type=None, protocol_name=None,
                                         assignments=[]), 3)
    assert leader
    g.finish_sync(2)
    assert g.state == STABLE and fut.result().error == E.NONE
    clock.t = 5
    g.heartbeat(a, None, 2)
    g.heartbeat(b, None, 2)   # b heartbeats but never sends SyncGroup
    clock.t = 9
    g.heartbeat(a, None, 2)
    g.heartbeat(b, None, 2)
    g.expire(clock.t)
    assert b in g.members
    clock.t = 10.1
    g.expire(clock.t)
    assert b not in g.members and g.state == PREPARING
