"""The classic group protocol: JoinGroup / SyncGroup / Heartbeat / LeaveGroup.

One `ClassicGroup` per group id, following Kafka's GroupCoordinator state machine:

    Empty -> PreparingRebalance -> CompletingRebalance -> Stable -> PreparingRebalance ...

A join phase completes as soon as every known member has rejoined, or at the largest
rebalance timeout of the members; members that did not rejoin are removed. With an initial
delay (Kafka's group.initial.rebalance.delay.ms; the coordinator's default is none, decision
0006) the first join phase of an empty group is Kafka's delayed one: it ends only when no
new member arrived during one delay, or when the rebalance timeout is used up, so consumers
started together share the first generation instead of rebalancing at once.
Requests that must wait (a JoinGroup during a rebalance, a follower's SyncGroup) get a
future; the caller returns it to the connection so later requests keep flowing.
Persistence is the coordinator's: it stores the group after a leader's SyncGroup, before
the assignment is handed out, and whenever the group changes shape outside a rebalance.
"""
from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.groups.protocol import subscribed_topics
from broker.protocol.errors import ErrorCode as E

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"


@dataclass(slots=True)
class JoinResult:
    """What a JoinGroup response carries."""

    error: int
    member_id: str = ""
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: list = field(default_factory=list)   # (member_id, instance_id, metadata)
    skip_assignment: bool = False


@dataclass(slots=True)
class SyncResult:
    """What a SyncGroup response carries."""

    error: int
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(slots=True)
class ClassicMember:
    """A member of a classic group."""

    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_fut: asyncio.Future | None = None
    sync_fut: asyncio.Future | None = None
    deadline: float = 0.0

    def metadata(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def to_json(self) -> dict:
        return {"id": self.member_id, "iid": self.instance_id, "cid": self.client_id,
                "host": self.client_host, "st": self.session_timeout_ms,
                "rt": self.rebalance_timeout_ms, "pt": self.protocol_type,
                "p": [[n, base64.b64encode(m).decode()] for n, m in self.protocols],
                "a": base64.b64encode(self.assignment).decode()}

    @classmethod
    def from_json(cls, d: dict, deadline: float) -> ClassicMember:
        return cls(d["id"], d["iid"], d["cid"], d["host"], d["st"], d["rt"], d["pt"],
                   [(n, base64.b64decode(m)) for n, m in d["p"]], base64.b64decode(d["a"]),
                   deadline=deadline)


def _resolve(fut: asyncio.Future | None, value) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


class ClassicGroup:
    """A classic group's membership and rebalance state (in memory)."""

    kind = "classic"

    def __init__(self, group_id: str, now: Callable[[], float], new_id: Callable[[str], str],
                 changed: Callable[[ClassicGroup], None], initial_delay_ms: int = 0) -> None:
        self.group_id = group_id
        self.now = now
        self.new_id = new_id
        self.changed = changed  # the coordinator persists the group in the background
        self.state = EMPTY
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader: str | None = None
        self.members: dict[str, ClassicMember] = {}
        self.static: dict[str, str] = {}          # instance id -> member id
        self.pending: dict[str, float] = {}       # MEMBER_ID_REQUIRED ids -> deadline
        self.rebalance_deadline: float | None = None
        self.pending_sync: set[str] = set()       # joined this generation, not yet synced
        self.sync_deadline: float | None = None
        # the delayed first join phase of an empty group (Kafka's InitialDelayedJoin)
        self.initial_delay_ms = initial_delay_ms
        self.initial_join = False
        self.new_member_added = False
        self.initial_step_ms = 0       # the delay that is running
        self.initial_remaining_ms = 0  # how much the phase may still be extended

    def abandon(self) -> None:
        """Another broker coordinates the group now: answer the joins and syncs waiting
        here with NOT_COORDINATOR (the members look for the coordinator again)."""
        for m in self.members.values():
            _resolve(m.join_fut, JoinResult(E.NOT_COORDINATOR, m.member_id))
            _resolve(m.sync_fut, SyncResult(E.NOT_COORDINATOR))

    # ------------------------------------------------------------------ queries

    def is_empty(self) -> bool:
        return not self.members

    def subscribed(self, topic: str) -> bool | None:
        """Whether a member subscribes to `topic` (None: the protocol is not `consumer`)."""
        if self.protocol_type != "consumer" or self.protocol_name is None:
            return None
        for m in self.members.values():
            topics = subscribed_topics(m.metadata(self.protocol_name))
            if topics is None or topic in topics:
                return True
        return False

    def fenced(self, member_id: str, instance_id: str | None) -> bool:
        if instance_id is None:
            return False
        known = self.static.get(instance_id)
        return known is not None and known != member_id

    def to_json(self) -> dict:
        return {"type": "classic", "gen": self.generation, "pt": self.protocol_type,
                "pn": self.protocol_name, "leader": self.leader,
                "members": [m.to_json() for m in self.members.values()]}

    def restore(self, d: dict) -> None:
        now = self.now()
        self.generation, self.protocol_type = d["gen"], d["pt"]
        self.protocol_name, self.leader = d["pn"], d["leader"]
        self.members = {}
        for md in d["members"]:
            m = ClassicMember.from_json(md, now + md["st"] / 1000)
            self.members[m.member_id] = m
        self.static = {m.instance_id: m.member_id for m in self.members.values()
                       if m.instance_id is not None}
        self.state = STABLE if self.members else EMPTY

    # ---------------------------------------------------------------- JoinGroup

    def join(self, req, version: int, client_id: str, client_host: str):
        """A JoinGroupResult now, or a future of one."""
        protocols = [(p.name, bytes(p.metadata)) for p in req.protocols]
        if self.state == DEAD:
            return JoinResult(E.COORDINATOR_NOT_AVAILABLE, req.member_id)
        if not self._supports(req.protocol_type, protocols):
            return JoinResult(E.INCONSISTENT_GROUP_PROTOCOL, req.member_id)
        if not req.member_id:
            return self._join_new(req, version, protocols, client_id, client_host)
        return self._join_known(req, protocols, client_id, client_host)

    def _supports(self, protocol_type: str, protocols) -> bool:
        if not protocol_type or not protocols:
            return False
        if not self.members:
            return True
        return protocol_type == self.protocol_type and bool(
            self._candidates() & {name for name, _ in protocols})

    def _candidates(self) -> set[str]:
        sets = [{n for n, _ in m.protocols} for m in self.members.values()]
        return set.intersection(*sets) if sets else set()

    def _join_new(self, req, version, protocols, client_id, client_host):
        iid = req.group_instance_id
        new_id = self.new_id(iid or client_id)
        if iid is not None and iid in self.static:
            return self._replace_static(self.static[iid], new_id, req, version, protocols,
                                        client_id, client_host)
        if iid is None and version >= 4:
            self.pending[new_id] = self.now() + req.session_timeout_ms / 1000
            return JoinResult(E.MEMBER_ID_REQUIRED, new_id)
        return self._add_and_rebalance(new_id, req, protocols, client_id, client_host)

    def _join_known(self, req, protocols, client_id, client_host):
        mid, iid = req.member_id, req.group_instance_id
        if mid in self.pending and iid is None:
            del self.pending[mid]
            return self._add_and_rebalance(mid, req, protocols, client_id, client_host)
        if self.fenced(mid, iid):
            return JoinResult(E.FENCED_INSTANCE_ID, mid)
        member = self.members.get(mid)
        if member is None or (iid is not None and self.static.get(iid) != mid):
            return JoinResult(E.UNKNOWN_MEMBER_ID, mid)
        member.deadline = self.now() + member.session_timeout_ms / 1000
        same = member.protocols == protocols
        if self.state == COMPLETING and same:
            return self._result(member)
        if self.state == STABLE and same and mid != self.leader:
            return self._result(member)
        self._update(member, req, protocols)
        fut = self._await_join(member)
        if self.state != PREPARING:
            self._prepare_rebalance()
        self.maybe_complete_join()
        return fut

    def _add_and_rebalance(self, mid, req, protocols, client_id, client_host):
        if not self.members:  # the first member of an empty group sets its protocol type
            self.protocol_type = req.protocol_type
        m = ClassicMember(mid, req.group_instance_id, client_id, client_host,
                          req.session_timeout_ms, _rebalance_timeout(req), req.protocol_type,
                          protocols, deadline=self.now() + req.session_timeout_ms / 1000)
        self.members[mid] = m
        if m.instance_id is not None:
            self.static[m.instance_id] = mid
        if self.leader is None:
            self.leader = mid
        if self.initial_join:
            self.new_member_added = True  # the delayed first phase waits another delay
        fut = self._await_join(m)
        self._prepare_rebalance()
        self.maybe_complete_join()
        return fut

    def _replace_static(self, old_id, new_id, req, version, protocols, client_id, host):
        old = self.members.pop(old_id)
        _resolve(old.join_fut, JoinResult(E.FENCED_INSTANCE_ID, old_id))
        _resolve(old.sync_fut, SyncResult(E.FENCED_INSTANCE_ID))
        m = ClassicMember(new_id, old.instance_id, client_id, host, req.session_timeout_ms,
                          _rebalance_timeout(req), req.protocol_type, old.protocols,
                          old.assignment, deadline=self.now() + req.session_timeout_ms / 1000)
        self.members[new_id] = m
        self.static[m.instance_id] = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        was_leader = self.leader == old_id
        if was_leader:
            self.leader = new_id
        if self.state == STABLE and m.metadata(self.protocol_name) == dict(protocols).get(
                self.protocol_name):
            m.protocols = protocols  # no rebalance; JoinGroup stores the new member id
            if was_leader and version >= 9:
                return JoinResult(E.NONE, new_id, self.generation, self.protocol_type,
                                  self.protocol_name, new_id, self._member_list(), True)
            return JoinResult(E.NONE, new_id, self.generation, self.protocol_type,
                              self.protocol_name, old_id if was_leader else self.leader)
        self._update(m, req, protocols)
        fut = self._await_join(m)
        if self.state != PREPARING:
            self._prepare_rebalance()
        self.maybe_complete_join()
        return fut

    def _update(self, m: ClassicMember, req, protocols) -> None:
        m.protocols = protocols
        m.session_timeout_ms = req.session_timeout_ms
        m.rebalance_timeout_ms = _rebalance_timeout(req)

    def _await_join(self, m: ClassicMember) -> asyncio.Future:
        _resolve(m.join_fut, JoinResult(E.REBALANCE_IN_PROGRESS, m.member_id))
        m.join_fut = asyncio.get_running_loop().create_future()
        return m.join_fut

    def _member_list(self) -> list:
        return [(m.member_id, m.instance_id, m.metadata(self.protocol_name))
                for m in self.members.values()]

    def _result(self, m: ClassicMember) -> JoinResult:
        members = self._member_list() if m.member_id == self.leader else []
        return JoinResult(E.NONE, m.member_id, self.generation, self.protocol_type,
                          self.protocol_name, self.leader or "", members)

    # ------------------------------------------------------------- rebalancing

    def _prepare_rebalance(self) -> None:
        if self.state == COMPLETING:
            for m in self.members.values():
                m.assignment = b""
                _resolve(m.sync_fut, SyncResult(E.REBALANCE_IN_PROGRESS))
                m.sync_fut = None
        self.pending_sync.clear()
        timeout = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        if self.state == EMPTY and self.initial_delay_ms > 0:
            self.initial_join, self.new_member_added = True, False
            self.initial_step_ms = self.initial_delay_ms
            self.initial_remaining_ms = max(timeout - self.initial_delay_ms, 0)
            self.rebalance_deadline = self.now() + self.initial_delay_ms / 1000
        elif self.state != PREPARING:
            self.rebalance_deadline = self.now() + timeout / 1000
        self.state = PREPARING

    def maybe_complete_join(self) -> None:
        """End the join phase once every known member, and every member that was just
        given an id (MEMBER_ID_REQUIRED), has joined. The delayed first phase of a group
        ends only at its deadline (`expire`), unless every member left meanwhile."""
        if self.state != PREPARING or self.pending or (self.initial_join and self.members):
            return
        if all(m.join_fut is not None for m in self.members.values()):
            self.complete_join()

    def _extend_initial_join(self, now: float) -> bool:
        """At the delayed first phase's deadline: wait one more delay if a new member
        arrived during the last one and the rebalance timeout allows (Kafka's rule)."""
        if not (self.initial_join and self.new_member_added and self.initial_remaining_ms):
            return False
        self.new_member_added = False
        delay = min(self.initial_delay_ms, self.initial_remaining_ms)
        self.initial_remaining_ms = max(self.initial_remaining_ms - self.initial_step_ms, 0)
        self.initial_step_ms = delay
        self.rebalance_deadline = now + delay / 1000
        return True

    def complete_join(self) -> None:
        """End the join phase: drop members that did not rejoin, start a generation."""
        assert self.state == PREPARING
        self.initial_join = self.new_member_added = False
        for m in [m for m in self.members.values() if m.join_fut is None]:
            self._remove(m.member_id)
        self.generation += 1
        self.rebalance_deadline = None
        if not self.members:
            self.state, self.protocol_name, self.leader = EMPTY, None, None
            self.changed(self)
            return
        self.state = COMPLETING
        self.protocol_name = self._select_protocol()
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        now = self.now()
        self.pending_sync = set(self.members)
        self.sync_deadline = now + max(m.rebalance_timeout_ms for m in self.members.values()) \
            / 1000
        for m in self.members.values():
            fut, m.join_fut = m.join_fut, None
            m.deadline = now + m.session_timeout_ms / 1000
            _resolve(fut, self._result(m))

    def _select_protocol(self) -> str:
        candidates = self._candidates()
        assert candidates, "every member supports a common protocol (checked at join)"
        votes: dict[str, int] = {}
        for m in self.members.values():
            first = next(n for n, _ in m.protocols if n in candidates)
            votes[first] = votes.get(first, 0) + 1
        return max(votes, key=votes.get)

    def _remove(self, mid: str) -> ClassicMember | None:
        m = self.members.pop(mid, None)
        if m is None:
            return None
        if m.instance_id is not None and self.static.get(m.instance_id) == mid:
            del self.static[m.instance_id]
        self.pending_sync.discard(mid)
        _resolve(m.join_fut, JoinResult(E.UNKNOWN_MEMBER_ID, mid))
        _resolve(m.sync_fut, SyncResult(E.UNKNOWN_MEMBER_ID))
        if self.leader == mid:
            self.leader = next(iter(self.members), None)
        return m

    def _after_removal(self) -> None:
        if self.state in (STABLE, COMPLETING):
            self._prepare_rebalance()
        self.maybe_complete_join()

    def expire(self, now: float) -> bool:
        """Remove members whose session ran out; end an overdue join phase. True if any."""
        lapsed = [p for p, dl in self.pending.items() if dl < now]
        for pid in lapsed:
            del self.pending[pid]
        gone = [m.member_id for m in self.members.values()
                if m.join_fut is None and m.sync_fut is None and m.deadline < now]
        if self.pending_sync and self.sync_deadline is not None and now >= self.sync_deadline:
            gone += [mid for mid in self.pending_sync if mid not in gone]  # never synced
        for mid in gone:
            self._remove(mid)
        if gone:
            self._after_removal()
        elif lapsed:
            self.maybe_complete_join()
        if self.state == PREPARING and self.rebalance_deadline is not None \
                and now >= self.rebalance_deadline and not self._extend_initial_join(now):
            self.complete_join()
        return bool(gone)

    # ---------------------------------------------------------------- SyncGroup

    def sync(self, req, version: int):
        """(SyncResult now | a future of one, is_leader_sync)."""
        mid = req.member_id
        if self.state == DEAD:
            return SyncResult(E.COORDINATOR_NOT_AVAILABLE), False
        if self.fenced(mid, req.group_instance_id):
            return SyncResult(E.FENCED_INSTANCE_ID), False
        m = self.members.get(mid)
        if m is None:
            return SyncResult(E.UNKNOWN_MEMBER_ID), False
        if req.generation_id != self.generation:
            return SyncResult(E.ILLEGAL_GENERATION), False
        if version >= 5 and ((req.protocol_type is not None
                              and req.protocol_type != self.protocol_type)
                             or (req.protocol_name is not None
                                 and req.protocol_name != self.protocol_name)):
            return SyncResult(E.INCONSISTENT_GROUP_PROTOCOL), False
        if self.state == PREPARING:
            return SyncResult(E.REBALANCE_IN_PROGRESS), False
        m.deadline = self.now() + m.session_timeout_ms / 1000
        self.pending_sync.discard(mid)
        if self.state == STABLE:
            return self._sync_ok(m), False
        assert self.state == COMPLETING
        _resolve(m.sync_fut, SyncResult(E.REBALANCE_IN_PROGRESS))
        m.sync_fut = asyncio.get_running_loop().create_future()
        if mid != self.leader:
            return m.sync_fut, False
        given = {a.member_id: bytes(a.assignment) for a in req.assignments}
        for other in self.members.values():
            other.assignment = given.get(other.member_id, b"")
        return m.sync_fut, True

    def _sync_ok(self, m: ClassicMember) -> SyncResult:
        return SyncResult(E.NONE, self.protocol_type, self.protocol_name, m.assignment)

    def finish_sync(self, generation: int, error: int = E.NONE) -> None:
        """The leader's assignment is stored (or failed to be): hand it out."""
        if self.state != COMPLETING or self.generation != generation:
            return
        if error:
            for m in self.members.values():
                m.assignment = b""
                _resolve(m.sync_fut, SyncResult(error))
                m.sync_fut = None
            self._prepare_rebalance()
            return
        self.state = STABLE
        for m in self.members.values():
            fut, m.sync_fut = m.sync_fut, None
            _resolve(fut, self._sync_ok(m))

    # ------------------------------------------------------- Heartbeat, LeaveGroup

    def heartbeat(self, member_id: str, instance_id: str | None, generation: int) -> int:
        if self.state == DEAD:
            return E.COORDINATOR_NOT_AVAILABLE
        if self.fenced(member_id, instance_id):
            return E.FENCED_INSTANCE_ID
        m = self.members.get(member_id)
        if m is None:
            return E.UNKNOWN_MEMBER_ID
        if generation != self.generation:
            return E.ILLEGAL_GENERATION
        m.deadline = self.now() + m.session_timeout_ms / 1000
        return E.REBALANCE_IN_PROGRESS if self.state == PREPARING else E.NONE

    def leave(self, member_id: str, instance_id: str | None) -> int:
        """Remove one member (by instance id when given); the caller rebalances."""
        if instance_id is not None:
            known = self.static.get(instance_id)
            if known is None:
                return E.UNKNOWN_MEMBER_ID
            if member_id and member_id != known:
                return E.FENCED_INSTANCE_ID
            member_id = known
        elif member_id in self.pending:
            del self.pending[member_id]
            self.maybe_complete_join()
            return E.NONE
        if self._remove(member_id) is None:
            return E.UNKNOWN_MEMBER_ID
        return E.NONE

    def after_leave(self) -> None:
        self._after_removal()

    def touch(self, member_id: str) -> None:
        """An offset commit from a member counts as liveness (as in Kafka)."""
        m = self.members.get(member_id)
        if m is not None:
            m.deadline = max(m.deadline, self.now() + m.session_timeout_ms / 1000)


def _rebalance_timeout(req) -> int:
    rt = getattr(req, "rebalance_timeout_ms", -1)
    return rt if rt is not None and rt >= 0 else req.session_timeout_ms
