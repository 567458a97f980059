"""KIP-848 consumer groups: ConsumerGroupHeartbeat with server-side assignment.

The group epoch bumps when membership, subscriptions or the subscribed topics' partition
counts change; the target assignment is then recomputed by the group's assignor (at the
"assignment epoch"). Each member reconciles towards its target one heartbeat at a time,
as Kafka's CurrentAssignmentBuilder does:

- partitions it owns but no longer targets are revoked first (the member keeps its epoch
  until it reports, in a heartbeat, that it no longer owns them);
- then it moves to the assignment epoch and receives its new partitions, except those
  another member still has to revoke ("unreleased"), which come in later heartbeats.

So no partition is ever owned by two members at once. Assignments are kept by topic name
and sent by topic id.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from broker.groups.assignors import ASSIGNORS, DEFAULT_ASSIGNOR
from broker.protocol.errors import ErrorCode as E

Parts = dict[str, set[int]]

STABLE, UNREVOKED, UNRELEASED = "stable", "unrevoked_partitions", "unreleased_partitions"


class HeartbeatError(Exception):
    """A ConsumerGroupHeartbeat refused with a Kafka error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _copy(p: Parts) -> Parts:
    return {t: set(s) for t, s in p.items() if s}


def _minus(a: Parts, b: Parts) -> Parts:
    return {t: s - b.get(t, set()) for t, s in a.items() if s - b.get(t, set())}


def _and(a: Parts, b: Parts) -> Parts:
    return {t: s & b.get(t, set()) for t, s in a.items() if s & b.get(t, set())}


def _json_parts(p: Parts) -> dict:
    return {t: sorted(s) for t, s in p.items()}


@dataclass
class ConsumerMember:
    """A KIP-848 member."""

    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    epoch: int = 0
    prev_epoch: int = -1
    state: str = STABLE
    rebalance_timeout_ms: int = 300_000
    topic_names: list[str] = field(default_factory=list)
    topic_regex: str | None = None
    assignor: str | None = None
    assigned: Parts = field(default_factory=dict)
    revoking: Parts = field(default_factory=dict)
    deadline: float = 0.0
    revoke_deadline: float | None = None
    sent: Parts | None = None     # the assignment last sent, to send only changes

    def to_json(self) -> dict:
        return {"id": self.member_id, "iid": self.instance_id, "rack": self.rack_id,
                "cid": self.client_id, "host": self.client_host, "e": self.epoch,
                "pe": self.prev_epoch, "s": self.state, "rt": self.rebalance_timeout_ms,
                "tn": self.topic_names, "re": self.topic_regex, "as": self.assignor,
                "a": _json_parts(self.assigned), "r": _json_parts(self.revoking)}

    @classmethod
    def from_json(cls, d: dict, deadline: float) -> ConsumerMember:
        return cls(d["id"], d["iid"], d["rack"], d["cid"], d["host"], d["e"], d["pe"],
                   d["s"], d["rt"], d["tn"], d["re"], d["as"],
                   {t: set(p) for t, p in d["a"].items()},
                   {t: set(p) for t, p in d["r"].items()}, deadline)


class ConsumerGroup:
    """A KIP-848 group's members, epochs and target assignment (in memory)."""

    kind = "consumer"

    def __init__(self, group_id: str, coordinator) -> None:
        self.group_id = group_id
        self.coordinator = coordinator
        self.epoch = 0
        self.assignment_epoch = 0
        self.members: dict[str, ConsumerMember] = {}
        self.target: dict[str, Parts] = {}
        self.topics_seen: dict[str, int] = {}   # subscribed topic -> partitions at epoch

    # ------------------------------------------------------------------ queries

    def is_empty(self) -> bool:
        return not self.members

    @property
    def state(self) -> str:
        if not self.members:
            return "Empty"
        if self.assignment_epoch < self.epoch:
            return "Assigning"
        if any(m.epoch != self.assignment_epoch or m.state != STABLE
               for m in self.members.values()):
            return "Reconciling"
        return "Stable"

    def assignor_name(self) -> str:
        names = [m.assignor for m in self.members.values() if m.assignor]
        return names[0] if names else DEFAULT_ASSIGNOR

    def subscribed(self, topic: str) -> bool:
        return topic in self._subscribed_topics()

    def to_json(self) -> dict:
        return {"type": "consumer", "epoch": self.epoch, "ae": self.assignment_epoch,
                "members": [m.to_json() for m in self.members.values()],
                "target": {m: _json_parts(p) for m, p in self.target.items()},
                "seen": self.topics_seen}

    def restore(self, d: dict) -> None:
        now = self.coordinator.now()
        timeout = self.coordinator.config.consumer_session_timeout_ms / 1000
        self.epoch, self.assignment_epoch = d["epoch"], d["ae"]
        self.members = {m["id"]: ConsumerMember.from_json(m, now + timeout)
                        for m in d["members"]}
        self.target = {m: {t: set(p) for t, p in a.items()} for m, a in d["target"].items()}
        self.topics_seen = d["seen"]

    # ---------------------------------------------------------------- validation

    def validate_commit(self, member_id: str, epoch: int, version: int) -> int:
        if epoch < 0 and not self.members:
            return E.NONE
        m = self.members.get(member_id)
        if m is None:
            return E.UNKNOWN_MEMBER_ID
        if version < 9:
            return E.UNSUPPORTED_VERSION
        if epoch > m.epoch:
            return E.FENCED_MEMBER_EPOCH
        if epoch < m.epoch:
            return E.STALE_MEMBER_EPOCH
        return E.NONE

    def validate_fetch(self, member_id: str | None, epoch: int) -> int:
        if member_id is None or (epoch < 0 and not member_id):
            return E.NONE
        m = self.members.get(member_id)
        if m is None:
            return E.UNKNOWN_MEMBER_ID
        if epoch != m.epoch:
            return E.STALE_MEMBER_EPOCH
        return E.NONE

    # ----------------------------------------------------------------- heartbeat

    def heartbeat(self, req, version: int, client_id: str, client_host: str):
        """Returns (member, assignment to send or None); raises HeartbeatError."""
        now = self.coordinator.now()
        cfg = self.coordinator.config
        if req.member_epoch in (-1, -2):
            return self._leave(req), None
        m, changed = self._member(req, version, client_id, client_host)
        m.deadline = now + cfg.consumer_session_timeout_ms / 1000
        if req.rebalance_timeout_ms is not None and req.rebalance_timeout_ms > 0:
            m.rebalance_timeout_ms = req.rebalance_timeout_ms
        if req.rack_id is not None:
            m.rack_id = req.rack_id
        if req.server_assignor is not None:
            m.assignor = req.server_assignor
        if req.subscribed_topic_names is not None and \
                sorted(req.subscribed_topic_names) != sorted(m.topic_names):
            m.topic_names = list(req.subscribed_topic_names)
            changed = True
        regex = getattr(req, "subscribed_topic_regex", None)
        if regex is not None and regex != (m.topic_regex or ""):
            m.topic_regex = regex or None
            changed = True
        seen = self._topic_partitions()
        if changed or seen != self.topics_seen:
            self.epoch += 1
            self.topics_seen = seen
        if self.assignment_epoch < self.epoch:
            self._compute_target()
        owned = None
        if req.topic_partitions is not None:
            owned = self._owned(req.topic_partitions)
        self._reconcile(m, owned, now)
        send = None
        full = req.member_epoch == 0 or req.topic_partitions is not None
        if full or m.sent != m.assigned:
            send = _copy(m.assigned)
            m.sent = send
        return m, send

    def _member(self, req, version, client_id, client_host) -> tuple[ConsumerMember, bool]:
        """The member the heartbeat is from, and whether it just joined."""
        mid = req.member_id
        if req.member_epoch == 0:
            if not mid:
                if version >= 1:
                    raise HeartbeatError(E.INVALID_REQUEST, "MemberId can't be empty.")
                mid = self.coordinator.new_member_id(client_id or "consumer")
            if req.subscribed_topic_names is None and \
                    getattr(req, "subscribed_topic_regex", None) is None:
                raise HeartbeatError(E.INVALID_REQUEST, "SubscribedTopicNames or "
                                     "SubscribedTopicRegex must be set in first request.")
            m = self.members.get(mid)
            if req.instance_id is not None:
                back = self._static_join(mid, req.instance_id, m)
                if back is not m:
                    return back, False  # a static member back: it keeps its assignment
            if m is None:
                m = ConsumerMember(mid, req.instance_id, client_id=client_id,
                                   client_host=client_host)
                self.members[mid] = m
                return m, True
            if m.epoch != 0 or m.assigned:  # a member rejoining with epoch 0 starts over
                m.epoch, m.prev_epoch, m.state = 0, -1, STABLE
                m.assigned, m.revoking, m.sent = {}, {}, None
            return m, False
        m = self.members.get(mid)
        if m is None:
            raise HeartbeatError(E.UNKNOWN_MEMBER_ID,
                                 f"Member {mid} is not a member of group {self.group_id}.")
        if req.member_epoch != m.epoch:
            owned = self._owned(req.topic_partitions or [])
            if not (req.member_epoch == m.prev_epoch and req.topic_partitions is not None
                    and all(p <= m.assigned.get(t, set()) for t, p in owned.items())):
                raise HeartbeatError(E.FENCED_MEMBER_EPOCH,
                                     f"The member epoch {req.member_epoch} does not match "
                                     f"the expected epoch {m.epoch}.")
        return m, False

    def _static_join(self, mid, instance_id, m):
        other = next((x for x in self.members.values() if x.instance_id == instance_id), None)
        if other is None or other.member_id == mid:
            return m
        if other.epoch != -2:
            raise HeartbeatError(E.UNRELEASED_INSTANCE_ID,
                                 f"Static member {instance_id} is still in use.")
        old_id = other.member_id  # the static member is back: it keeps its partitions
        del self.members[old_id]
        if old_id in self.target:
            self.target[mid] = self.target.pop(old_id)
        other.member_id = mid
        other.epoch = max(other.prev_epoch, 0)
        other.sent = None
        self.members[mid] = other
        return other

    def _leave(self, req) -> ConsumerMember:
        m = self.members.get(req.member_id)
        if m is None:
            raise HeartbeatError(E.UNKNOWN_MEMBER_ID,
                                 f"Member {req.member_id} is not a member of group "
                                 f"{self.group_id}.")
        if req.member_epoch == -2 and m.instance_id is not None:
            # a static member leaving for a while keeps its assignment
            m.prev_epoch, m.epoch = m.epoch, -2
            return m
        self.remove(m.member_id)
        m.epoch = req.member_epoch
        return m

    def remove(self, mid: str) -> None:
        self.members.pop(mid, None)
        self.target.pop(mid, None)
        self.epoch += 1

    def _owned(self, tps) -> Parts:
        by_id = self.coordinator.broker.topics.by_id
        out: Parts = {}
        for tp in tps:
            topic = by_id.get(bytes(tp.topic_id))
            if topic is not None and tp.partitions:
                out.setdefault(topic.name, set()).update(tp.partitions)
        return out

    def _subscribed_topics(self) -> set[str]:
        names = set(self.coordinator.broker.topics.topics)
        out = set()
        for m in self.members.values():
            out.update(t for t in m.topic_names if t in names)
            if m.topic_regex:
                rx = re.compile(m.topic_regex)
                out.update(t for t in names if rx.fullmatch(t))
        return out

    def _topic_partitions(self) -> dict[str, int]:
        topics = self.coordinator.broker.topics.topics
        return {t: topics[t].partitions for t in sorted(self._subscribed_topics())}

    def _member_topics(self, m: ConsumerMember) -> set[str]:
        subs = {t for t in m.topic_names if t in self.topics_seen}
        if m.topic_regex:
            rx = re.compile(m.topic_regex)
            subs.update(t for t in self.topics_seen if rx.fullmatch(t))
        return subs

    def _compute_target(self) -> None:
        assign = ASSIGNORS.get(self.assignor_name(), ASSIGNORS[DEFAULT_ASSIGNOR])
        subs = {mid: self._member_topics(m) for mid, m in self.members.items()}
        self.target = assign(subs, self.topics_seen, self.target)
        self.assignment_epoch = self.epoch

    # ------------------------------------------------------------- reconciliation

    def _reconcile(self, m: ConsumerMember, owned: Parts | None, now: float) -> None:
        target = self.target.get(m.member_id, {})
        if m.state == UNREVOKED:
            still = _and(owned, m.revoking) if owned is not None else m.revoking
            if still:
                return  # wait until the member has revoked them
            m.revoking = {}
            m.revoke_deadline = None
        if m.epoch == self.assignment_epoch and m.state == STABLE:
            return
        revoke = _minus(m.assigned, target)
        if revoke:
            m.assigned = _and(m.assigned, target)
            m.revoking = revoke
            m.state = UNREVOKED
            m.revoke_deadline = now + m.rebalance_timeout_ms / 1000
            return
        busy = self._owned_by_others(m.member_id)
        m.assigned = _minus(target, busy)
        if m.epoch != self.assignment_epoch:
            m.prev_epoch, m.epoch = m.epoch, self.assignment_epoch
        m.state = UNRELEASED if _and(target, busy) else STABLE

    def _owned_by_others(self, mid: str) -> Parts:
        out: Parts = {}
        for o in self.members.values():
            if o.member_id == mid:
                continue
            for src in (o.assigned, o.revoking):
                for t, ps in src.items():
                    out.setdefault(t, set()).update(ps)
        return out

    def expire(self, now: float) -> bool:
        gone = [m.member_id for m in self.members.values()
                if m.deadline < now or (m.revoke_deadline is not None
                                        and m.revoke_deadline < now)]
        for mid in gone:
            self.remove(mid)
        return bool(gone)
