"""Kafka ACLs: the authorizer (`server.kafka_authorizer`), as Kafka's StandardAuthorizer
decides.

A binding allows or denies a principal (`User:alice`, `User:*`), from a host (an address or
`*`), an operation on resources of one type named literally (`*`: every one) or by prefix.
A request is allowed when the principal is a super user (`server.kafka_super_users`), or
no DENY binding matches and an ALLOW one does, for the operation or one that implies it
(ALL implies all; READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
DESCRIBE_CONFIGS). A resource no binding names at all is allowed only with
`server.kafka_allow_everyone_if_no_acl_found` (Kafka's default is false).

The principal of a connection is `User:` and its SASL user, else its TLS client
certificate's subject (RFC 2253, as Kafka's default principal builder has it), else
`User:ANONYMOUS`. Bindings are kept in metadata (`kafka/acl/<digest>`) and cached; the
Create/Describe/DeleteAcls APIs manage them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from s2core.metadata import list_all
from s2core.metadata.base import VersionMismatch

# Kafka's codes: resource types, pattern types, operations, permissions
ANY = 1
TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN, USER = 2, 3, 4, 5, 6, 7
MATCH, LITERAL, PREFIXED = 2, 3, 4
(ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
 ALTER_CONFIGS, IDEMPOTENT_WRITE, CREATE_TOKENS, DESCRIBE_TOKENS, TWO_PHASE_COMMIT) = \
    range(2, 16)
DENY, ALLOW = 2, 3
RESOURCE_TYPES = (TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN, USER)
OPERATIONS = tuple(range(2, 16))
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
_IMPLIES = {DESCRIBE: (READ, WRITE, DELETE, ALTER), DESCRIBE_CONFIGS: (ALTER_CONFIGS,)}
# the operations each resource type supports (what "authorized operations" fields list)
SUPPORTED = {
    TOPIC: (READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS),
    GROUP: (READ, DESCRIBE, DELETE),
    CLUSTER: (CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
              IDEMPOTENT_WRITE),
    TRANSACTIONAL_ID: (WRITE, DESCRIBE),
}
_KEY = "kafka/acl/"


@dataclass(frozen=True)
class Binding:
    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission: int

    def key(self) -> str:
        raw = json.dumps(asdict(self), sort_keys=True).encode()
        return _KEY + hashlib.sha256(raw).hexdigest()

    def names(self, name: str) -> bool:
        if self.pattern_type == LITERAL:
            return self.resource_name in (name, WILDCARD)
        return name.startswith(self.resource_name)


@dataclass(frozen=True)
class Filter:
    """A Describe/DeleteAcls filter: ANY matches anything, MATCH (pattern type) every
    binding that would apply to the named resource, null names/principals/hosts anything."""

    resource_type: int
    resource_name: str | None
    pattern_type: int
    principal: str | None
    host: str | None
    operation: int
    permission: int

    def matches(self, b: Binding) -> bool:
        if self.resource_type != ANY and b.resource_type != self.resource_type:
            return False
        if self.pattern_type == MATCH:
            if self.resource_name is not None and not b.names(self.resource_name):
                return False
        else:
            if self.pattern_type != ANY and b.pattern_type != self.pattern_type:
                return False
            if self.resource_name is not None and b.resource_name != self.resource_name:
                return False
        return ((self.principal is None or b.principal == self.principal)
                and (self.host is None or b.host == self.host)
                and (self.operation == ANY or b.operation == self.operation)
                and (self.permission == ANY or b.permission == self.permission))


def binding_error(b: Binding) -> str | None:
    """Why Kafka refuses to create this binding (None: it does not)."""
    if b.resource_type not in RESOURCE_TYPES:
        return f"Invalid resource type {b.resource_type}"
    if b.pattern_type not in (LITERAL, PREFIXED):
        return f"Invalid pattern type {b.pattern_type}: a binding is LITERAL or PREFIXED"
    if not b.resource_name:
        return "Resource name must not be empty"
    if b.resource_type == CLUSTER and b.resource_name != CLUSTER_NAME:
        return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
    if b.operation not in OPERATIONS:
        return f"Invalid operation {b.operation}"
    if b.permission not in (DENY, ALLOW):
        return f"Invalid permission type {b.permission}"
    kind, sep, name = b.principal.partition(":")
    if not sep or not kind or not name:
        return f"Could not parse principal from `{b.principal}` (no colon is found)"
    if not b.host:
        return "Host must not be empty (use * for any host)"
    return None


class Authorizer:
    """The bindings and the decision (see the module doc)."""

    def __init__(self, metadata, enabled: bool = False, super_users=(),
                 allow_if_no_acl: bool = False) -> None:
        self.metadata = metadata
        self.enabled = enabled
        self.super_users = set(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self.bindings: dict[str, Binding] = {}
        self._by_type: dict[int, list[Binding]] = {}

    async def load(self) -> None:
        """(Again: a cluster's brokers read what the others changed: broker/cluster.py.)"""
        self.bindings = {key: Binding(**json.loads(v.value))
                         for key, v in await list_all(self.metadata, _KEY)}
        self._index()

    def _index(self) -> None:
        by_type: dict[int, list[Binding]] = {}
        for b in self.bindings.values():
            by_type.setdefault(b.resource_type, []).append(b)
        self._by_type = by_type

    def authorize(self, principal: str, host: str, operation: int, resource_type: int,
                  name: str) -> bool:
        if not self.enabled or principal in self.super_users:
            return True
        named = [b for b in self._by_type.get(resource_type, ()) if b.names(name)]
        if not named:
            return self.allow_if_no_acl
        mine = [b for b in named if b.principal in (principal, "User:*")
                and b.host in (host, WILDCARD)]
        if any(b.permission == DENY and b.operation in (operation, ALL) for b in mine):
            return False
        allowing = (operation, ALL, *_IMPLIES.get(operation, ()))
        return any(b.permission == ALLOW and b.operation in allowing for b in mine)

    def authorize_any(self, principal: str, host: str, operation: int,
                      resource_type: int) -> bool:
        """Whether some resource of the type allows the operation (Kafka's
        authorizeByResourceType: an idempotent producer may write if it may write any
        topic)."""
        if not self.enabled or principal in self.super_users:
            return True
        mine = [b for b in self._by_type.get(resource_type, ())
                if b.principal in (principal, "User:*") and b.host in (host, WILDCARD)]
        if any(b.permission == DENY and b.operation in (operation, ALL)
               and b.pattern_type == LITERAL and b.resource_name == WILDCARD for b in mine):
            return False
        return any(b.permission == ALLOW and b.operation in (operation, ALL) for b in mine) \
            or (self.allow_if_no_acl and not self._by_type.get(resource_type))

    async def create(self, bindings: list[Binding]) -> None:
        for b in bindings:
            key = b.key()
            try:
                await self.metadata.create(key, json.dumps(asdict(b)).encode())
            except VersionMismatch:
                pass  # (already there: creating a binding twice is no error in Kafka)
            self.bindings[key] = b
        self._index()

    def describe(self, f: Filter) -> list[Binding]:
        return [b for b in self.bindings.values() if f.matches(b)]

    async def delete(self, f: Filter) -> list[Binding]:
        gone = []
        for key, b in list(self.bindings.items()):
            if f.matches(b):
                await self.metadata.delete(key)
                del self.bindings[key]
                gone.append(b)
        self._index()
        return gone


def connection_principal(conn) -> str:
    """`User:<name>` of a connection (see the module doc)."""
    if conn.principal:
        return f"User:{conn.principal}"
    cert = None
    if conn.transport is not None:
        cert = conn.transport.get_extra_info("peercert")
    if cert and cert.get("subject"):
        rdns = [",".join(f"{k}={v}" for k, v in rdn) for rdn in cert["subject"]]
        short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
                 "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
                 "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID"}
        for long, abbr in short.items():
            rdns = [r.replace(f"{long}=", f"{abbr}=") for r in rdns]
        return "User:" + ",".join(reversed(rdns))
    return "User:ANONYMOUS"


def connection_host(conn) -> str:
    return conn.peer[0] if conn.peer else ""
