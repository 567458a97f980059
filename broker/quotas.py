"""Kafka client quotas: stored, described, altered and enforced as Kafka does.

Quotas are set per entity with AlterClientQuotas (what `kafka-configs --alter
--entity-type users/clients/ips` sends) and kept in metadata, one row per entity under
`kafka/quota/`. An entity is a user, a client id, a user and a client id, or an IP; each
name may be the default (`--entity-default`), which applies to every user / client id / IP
that has no quota of its own, each measured on its own.

- `producer_byte_rate` (bytes/s of Produce requests), `consumer_byte_rate` (bytes/s of
  Fetch responses) and `request_percentage` (time spent handling requests, in percent of
  one thread) apply to users and client ids. Which entity's quota applies to a connection
  is found in Kafka's order, per quota kind: <user, client-id>, <user, default client-id>,
  <user>, <default user, client-id>, <default user, default client-id>, <default user>,
  <client-id>, <default client-id>. The user is the connection's principal name
  (`ANONYMOUS` without SASL or a client certificate).
- A rate is measured over `samples` windows of `window_s` seconds (Kafka's
  quota.window.num = 11 and quota.window.size.seconds = 1) as Kafka's sampled rate does,
  and a request that takes it over the quota is throttled by
  (rate - quota) / quota x the measured window, at most the whole window span. From the
  request version where Kafka clients back off by themselves (KIP-219) the response goes
  out at once with its `throttle_time_ms` and the connection then stops being read for
  that long; before it the response itself is held back that long.
- `controller_mutation_rate` (partitions created or deleted per second, KIP-599) is a
  token bucket of that rate and a burst of the whole window span: CreateTopics v6+,
  CreatePartitions v3+ and DeleteTopics v5+ refuse a topic with THROTTLING_QUOTA_EXCEEDED
  while the bucket is in debt, and older versions are accepted and throttled.
- `connection_creation_rate` applies to IPs (KIP-612): a connection over it is held,
  unread, for its throttle time and then closed.

With no quota set nothing is measured: every check returns at once.
"""
from __future__ import annotations

import ipaddress
import json
import math
import time
from collections import deque
from urllib.parse import quote

from broker.protocol.errors import ErrorCode
from s2core.metadata import list_all
from s2core.metadata.base import VersionMismatch

USER, CLIENT_ID, IP = "user", "client-id", "ip"
PRODUCE, FETCH, REQUEST, MUTATION = ("producer_byte_rate", "consumer_byte_rate",
                                     "request_percentage", "controller_mutation_rate")
CONNECTIONS = "connection_creation_rate"
_LONG, _INT, _DOUBLE = "long", "int", "double"
_USER_CLIENT_KEYS = {PRODUCE: _LONG, FETCH: _LONG, REQUEST: _DOUBLE, MUTATION: _DOUBLE}
_IP_KEYS = {CONNECTIONS: _INT}
PREFIX = "kafka/quota/"
_DEFAULT_TOKEN = "<default>"

# Kafka's version from which clients throttle themselves on a response's
# throttle_time_ms (KIP-219); APIs not listed do at every version
CLIENT_THROTTLES_FROM = {0: 6, 1: 8, 2: 3, 3: 6, 8: 4, 9: 4, 10: 2, 11: 3, 12: 2, 13: 2,
                         14: 2, 15: 2, 16: 2, 18: 2, 19: 3, 20: 2, 21: 1, 22: 1, 23: 3,
                         24: 1, 25: 1, 26: 1, 28: 1, 29: 1, 30: 1, 31: 1, 32: 2, 33: 1,
                         35: 1, 37: 1, 42: 1}
# not counted against request_percentage: the handshake every connection needs first
_EXEMPT = frozenset({17, 18, 36})  # SaslHandshake, ApiVersions, SaslAuthenticate

Entity = tuple  # ((type, name or None for the default), ...), sorted by type


class QuotaError(Exception):
    """A quota request that Kafka refuses, with its error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def entity_text(entity: Entity) -> str:
    """How Kafka prints an entity in its messages."""
    return "ClientQuotaEntity(entries={" + ", ".join(
        f"{t}={n}" for t, n in entity) + "})"


def _row_key(entity: Entity) -> str:
    return PREFIX + ",".join(
        f"{t}={_DEFAULT_TOKEN if n is None else quote(n, safe='')}" for t, n in entity)


class Rate:
    """A rate sampled in `samples` windows of `window` seconds, measured as Kafka's
    sampled `Rate` measures it: the total of the live windows over the time they span,
    counted as at least samples - 1 whole windows (so that one burst after a quiet time
    is not read as a huge rate)."""

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: deque[list[float]] = deque()  # [start, total]

    def record(self, amount: float, now: float, window: float, samples: int) -> None:
        w = self._windows
        if not w or now - w[-1][0] >= window:
            w.append([now, 0.0])
            while len(w) > samples:
                w.popleft()
        w[-1][1] += amount

    def measure(self, now: float, window: float, samples: int) -> tuple[float, float]:
        """(rate per second, the window span it was measured over, in seconds)."""
        w = self._windows
        while w and now - w[0][0] >= samples * window:
            w.popleft()
        total = sum(x[1] for x in w)
        span = now - w[0][0] if w else 0.0
        whole = int(span // window)
        if whole < samples - 1:
            span += (samples - 1 - whole) * window
        return total / span, span

    def idle(self, now: float, window: float, samples: int) -> bool:
        return not self._windows or now - self._windows[-1][0] >= samples * window


class TokenBucket:
    """Kafka's controller mutation quota (KIP-599): `rate` tokens a second, at most
    `burst`; a request may take the bucket into debt, and the next ones wait it out."""

    __slots__ = ("at", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.at = now

    def refill(self, rate: float, burst: float, now: float) -> float:
        self.tokens = min(burst, self.tokens + rate * (now - self.at))
        self.at = now
        return self.tokens


class QuotaManager:
    """The quotas of one broker: the entities' values (cached from metadata) and the
    rates measured against them."""

    def __init__(self, metadata, window_s: float = 1.0, samples: int = 11,
                 clock=time.monotonic) -> None:
        self.metadata = metadata
        self.window = window_s
        self.samples = samples
        self.clock = clock
        self.entities: dict[Entity, dict[str, float]] = {}
        self._rates: dict[tuple, Rate] = {}
        self._buckets: dict[tuple, TokenBucket] = {}
        self.client_quotas = False  # any user or client-id quota: requests are measured
        self.ip_quotas = False
        self._sweep_at = 0.0

    async def load(self) -> None:
        """(Again: a cluster's brokers read what the others changed: broker/cluster.py.)"""
        entities = {}
        for _, v in await list_all(self.metadata, PREFIX):
            d = json.loads(v.value)
            entities[tuple((t, n) for t, n in d["entity"])] = d["values"]
        self.entities = entities
        self._note_kinds()

    def _note_kinds(self) -> None:
        self.client_quotas = any(t != IP for e in self.entities for t, _ in e)
        self.ip_quotas = any(t == IP for e in self.entities for t, _ in e)

    # -- DescribeClientQuotas ------------------------------------------------------------

    def describe(self, components: list[tuple[str, int, str | None]],
                 strict: bool) -> list[tuple[Entity, dict[str, float]]]:
        """The entities a DescribeClientQuotas filter matches (match types: 0 exact name,
        1 the default, 2 any name); QuotaError for a filter Kafka refuses."""
        exact: dict[str, str | None] = {}
        typed: set[str] = set()
        for etype, match_type, match in components:
            if not etype:
                raise QuotaError(ErrorCode.INVALID_REQUEST, "Invalid empty entity type.")
            if etype in exact or etype in typed:
                raise QuotaError(ErrorCode.INVALID_REQUEST, f"Entity type {etype} cannot "
                                 "appear more than once in the filter.")
            if etype not in (USER, CLIENT_ID, IP):
                raise QuotaError(ErrorCode.UNSUPPORTED_VERSION,
                                 f"Unsupported entity type {etype}")
            if match_type == 0:
                if match is None:
                    raise QuotaError(ErrorCode.INVALID_REQUEST, "Request specified "
                                     "MATCH_TYPE_EXACT, but set match string to null.")
                exact[etype] = match
            elif match_type == 1:
                if match is not None:
                    raise QuotaError(ErrorCode.INVALID_REQUEST, "Request specified "
                                     "MATCH_TYPE_DEFAULT, but also specified a match string.")
                exact[etype] = None
            elif match_type == 2:
                if match is not None:
                    raise QuotaError(ErrorCode.INVALID_REQUEST, "Request specified "
                                     "MATCH_TYPE_SPECIFIED, but also specified a match "
                                     "string.")
                typed.add(etype)
            else:
                raise QuotaError(ErrorCode.INVALID_REQUEST, f"Unknown match type {match_type}")
        named = set(exact) | typed
        if IP in named and (USER in named or CLIENT_ID in named):
            raise QuotaError(ErrorCode.INVALID_REQUEST, "Invalid entity filter component "
                             "combination. IP filter component should not be used with "
                             "user or clientId filter component.")
        out = []
        for entity, values in sorted(self.entities.items(), key=lambda x: _row_key(x[0])):
            names = dict(entity)
            if any(t not in names or names[t] != n for t, n in exact.items()):
                continue
            if any(t not in names for t in typed):
                continue
            if strict and len(names) != len(named):
                continue
            out.append((entity, dict(values)))
        return out

    # -- AlterClientQuotas ---------------------------------------------------------------

    async def alter(self, entries: list[tuple[list[tuple[str, str | None]],
                                              list[tuple[str, float, bool]]]],
                    validate_only: bool) -> list[tuple[int, str | None]]:
        """Apply AlterClientQuotas entries ((entity, ops) each; an op is (key, value,
        remove)); the (error code, message) of each, in order."""
        results: list[tuple[int, str | None]] = []
        seen: set = set()
        for raw_entity, ops in entries:
            try:
                entity = self._validate_entity(raw_entity)
                if entity in seen:
                    raise QuotaError(ErrorCode.INVALID_REQUEST,
                                     f"Ignoring duplicate entity {entity_text(entity)}")
                seen.add(entity)
                changes = self._validate_ops(entity, ops)
                if not validate_only:
                    await self._apply(entity, changes)
                results.append((0, None))
            except QuotaError as e:
                results.append((e.code, e.message))
        return results

    @staticmethod
    def _validate_entity(raw: list[tuple[str, str | None]]) -> Entity:
        if not raw:
            raise QuotaError(ErrorCode.INVALID_REQUEST, "Invalid empty client quota entity")
        names: dict[str, str | None] = {}
        for etype, name in raw:
            if etype in names:
                raise QuotaError(ErrorCode.INVALID_REQUEST, "Invalid empty client quota "
                                 f"entity, duplicate entity entry {etype}")
            if etype not in (USER, CLIENT_ID, IP):
                raise QuotaError(ErrorCode.INVALID_REQUEST,
                                 f"Unhandled client quota entity type: {etype}")
            if name is not None and name == "":
                raise QuotaError(ErrorCode.INVALID_REQUEST, f"Empty {etype} not supported")
            names[etype] = name
        if IP in names:
            if len(names) > 1:
                raise QuotaError(ErrorCode.INVALID_REQUEST, "Invalid quota entity "
                                 "combination, IP entity should not be combined with "
                                 "User or ClientId")
            ip = names[IP]
            if ip is not None:
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    raise QuotaError(ErrorCode.INVALID_REQUEST,
                                     f"{ip} is not a valid IP or resolvable host.") from None
        return tuple(sorted(names.items()))

    def _validate_ops(self, entity: Entity, ops) -> dict[str, float | None]:
        kinds = _IP_KEYS if entity[0][0] == IP else _USER_CLIENT_KEYS
        changes: dict[str, float | None] = {}
        for key, value, remove in ops:
            if key in changes:
                raise QuotaError(ErrorCode.INVALID_REQUEST, f"Duplicate quota key {key} not "
                                 f"updating quota for this entity {entity_text(entity)}")
            if remove:
                changes[key] = None
                continue
            kind = kinds.get(key)
            if kind is None:
                raise QuotaError(ErrorCode.INVALID_REQUEST, f"Invalid configuration key {key}")
            if not math.isfinite(value) or value < 0:
                raise QuotaError(ErrorCode.INVALID_REQUEST,
                                 f"Configuration {key} must be a non-negative number")
            if kind in (_LONG, _INT) and abs(round(value) - value) > 1e-6:
                raise QuotaError(ErrorCode.INVALID_REQUEST, f"Configuration {key} must be a "
                                 f"{'Long' if kind == _LONG else 'Integer'} value")
            if kind == _INT and value > 2**31 - 1:
                raise QuotaError(ErrorCode.INVALID_REQUEST,
                                 f"Configuration {key} must be an Integer value")
            changes[key] = float(value)
        return changes

    async def _apply(self, entity: Entity, changes: dict[str, float | None]) -> None:
        key = _row_key(entity)
        while True:
            row = await self.metadata.get(key)
            values = json.loads(row.value)["values"] if row is not None else {}
            for k, v in changes.items():
                if v is None:
                    values.pop(k, None)
                else:
                    values[k] = v
            try:
                if not values:
                    if row is not None:
                        await self.metadata.delete(key, row.version)
                    self.entities.pop(entity, None)
                else:
                    body = json.dumps({"entity": [list(x) for x in entity],
                                       "values": values}).encode()
                    if row is None:
                        await self.metadata.create(key, body)
                    else:
                        await self.metadata.put(key, body, row.version)
                    self.entities[entity] = values
            except VersionMismatch:
                continue  # another alteration of the same entity came first: redo on it
            break
        self._note_kinds()

    # -- enforcement ---------------------------------------------------------------------

    def _resolve(self, user: str, client_id: str, kind: str) -> tuple[float, tuple] | None:
        """The quota of `kind` for this user and client id, and the tags of the rate it is
        measured with (Kafka's order of precedence, see the module doc)."""
        ents = self.entities
        for entity, tags in (
                (((CLIENT_ID, client_id), (USER, user)), (user, client_id)),
                (((CLIENT_ID, None), (USER, user)), (user, client_id)),
                (((USER, user),), (user, "")),
                (((CLIENT_ID, client_id), (USER, None)), (user, client_id)),
                (((CLIENT_ID, None), (USER, None)), (user, client_id)),
                (((USER, None),), (user, "")),
                (((CLIENT_ID, client_id),), ("", client_id)),
                (((CLIENT_ID, None),), ("", client_id))):
            values = ents.get(entity)
            if values is not None and kind in values:
                return values[kind], tags
        return None

    def record(self, user: str, client_id: str, kind: str, amount: float) -> int:
        """Count `amount` against the quota of `kind` that applies; the throttle time (ms)
        it earns (0 without a quota, or within it)."""
        found = self._resolve(user, client_id, kind)
        if found is None:
            return 0
        bound, tags = found
        return self._count((kind, tags), amount, bound)

    def _count(self, key: tuple, amount: float, bound: float) -> int:
        """Add `amount` to the rate `key` and measure it against `bound`: the throttle
        time (ms)."""
        now = self.clock()
        self._sweep(now)
        rate = self._rates.get(key)
        if rate is None:
            rate = self._rates[key] = Rate()
        rate.record(amount, now, self.window, self.samples)
        value, span = rate.measure(now, self.window, self.samples)
        cap = self.window * self.samples * 1000
        if value <= bound:
            return 0
        if bound <= 0:
            return int(cap)
        return int(min(cap, (value - bound) / bound * span * 1000))

    def throttle_request(self, user: str, client_id: str, api_key: int,
                         response_bytes: int, handler_s: float) -> int:
        """The throttle time (ms) of one request once answered: the larger of a fetch's
        byte-rate throttle and the request-time throttle (a produce's bytes are counted
        with `record` as it is read)."""
        ms = 0
        if api_key == 1:
            ms = self.record(user, client_id, FETCH, response_bytes)
        if api_key not in _EXEMPT:
            ms = max(ms, self.record(user, client_id, REQUEST, handler_s * 100.0))
        return ms

    def _bucket(self, conn) -> tuple[TokenBucket, float] | None:
        found = self._resolve(quota_user(conn), getattr(conn, "client_id", None) or "",
                              MUTATION)
        if found is None:
            return None
        rate, tags = found
        now = self.clock()
        burst = rate * self.window * self.samples
        bucket = self._buckets.get(tags)
        if bucket is None:
            bucket = self._buckets[tags] = TokenBucket(burst, now)
        bucket.refill(rate, burst, now)
        return bucket, rate

    def mutation_refused(self, conn) -> int:
        """Under a controller_mutation_rate quota in debt, the throttle time (ms) to
        refuse a topic creation or deletion with (the strict request versions, KIP-599);
        0: go ahead."""
        if not self.client_quotas:
            return 0
        found = self._bucket(conn)
        if found is None or found[0].tokens >= 0:
            return 0
        return self._debt_ms(-found[0].tokens, found[1])

    def record_mutation(self, conn, partitions: int) -> int:
        """Count `partitions` created or deleted; the throttle time (ms) of the debt."""
        if not self.client_quotas or partitions <= 0:
            return 0
        found = self._bucket(conn)
        if found is None:
            return 0
        bucket, rate = found
        bucket.tokens -= partitions
        return self._debt_ms(-bucket.tokens, rate) if bucket.tokens < 0 else 0

    def _debt_ms(self, debt: float, rate: float) -> int:
        if rate <= 0:
            return int(self.window * self.samples * 1000)
        return math.ceil(debt / rate * 1000)

    def connection(self, ip: str) -> int:
        """Count a new connection from `ip`; its throttle time (ms) if that exceeds the
        IP's connection_creation_rate."""
        values = self.entities.get(((IP, ip),))
        if values is None or CONNECTIONS not in values:
            values = self.entities.get(((IP, None),))
            if values is None or CONNECTIONS not in values:
                return 0
        return self._count((CONNECTIONS, ip), 1, values[CONNECTIONS])

    def _sweep(self, now: float) -> None:
        """Forget rates idle for a whole window span (client ids come and go)."""
        if now < self._sweep_at:
            return
        self._sweep_at = now + self.window * self.samples
        for k in [k for k, r in self._rates.items()
                  if r.idle(now, self.window, self.samples)]:
            del self._rates[k]


def client_throttles(api_key: int, version: int) -> bool:
    """Whether a client of this request version backs off by itself on a response's
    throttle_time_ms (KIP-219), so the broker answers first and then stops reading."""
    return version >= CLIENT_THROTTLES_FROM.get(api_key, 0)


def quota_user(conn) -> str:
    """The user a connection's quotas are looked up for: its principal's name."""
    from broker.acls import connection_principal

    if conn is None:  # (a request made in-process, as tests do)
        return "ANONYMOUS"
    if conn.principal:
        return conn.principal
    user = conn.quota_user
    if user is None:  # (a client certificate's subject, or ANONYMOUS)
        user = conn.quota_user = connection_principal(conn)[len("User:"):]
    return user
