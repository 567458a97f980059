"""S2 access tokens: issue, list and revoke them, and what each request may do.

A token's scope is S2's: the operations it may run (`ops`, united with the operations of
its `op_groups`), and the basins, streams and access token ids it may touch (each a
ResourceSet: `{"exact": name}` or `{"prefix": p}`; absent means none). With
`auto_prefix_streams`, stream names in its requests get its stream prefix added, and
listings strip it. A token expires at `expires_at` (by default, and at the latest, when
the token that issued it does). A token may only issue tokens within its own scope.

Tokens are kept in metadata: `access-tokens/<id>` holds the token's info and the SHA-256
of its secret, `access-token-hashes/<sha256>` the id (the secret itself is stored nowhere;
it is returned once, when issued). Lookups are cached for a second (a revoke in this
process takes effect at once; in another process within that second).

The configured `server.http_auth_tokens` are root tokens: every operation on everything,
no expiry. With none configured, auth is off: a request with no token, or with a token
this server did not issue, may do everything, while a token it issued still gets only
its scope.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from s2core.http.errors import HttpError, invalid
from s2core.metadata.base import MetadataStore, Op, VersionMismatch

OPERATIONS = (
    "list-basins", "create-basin", "delete-basin", "reconfigure-basin", "get-basin-config",
    "issue-access-token", "revoke-access-token", "list-access-tokens", "list-streams",
    "create-stream", "delete-stream", "get-stream-config", "reconfigure-stream", "check-tail",
    "append", "read", "trim", "fence", "account-metrics", "basin-metrics", "stream-metrics",
    "list-locations", "get-default-location", "set-default-location",  # (newer clients)
)
# (group, read/write) -> the operations it grants
GROUPS = {
    ("account", "read"): ("list-basins", "get-basin-config", "list-access-tokens",
                          "account-metrics"),
    ("account", "write"): ("create-basin", "delete-basin", "reconfigure-basin",
                           "issue-access-token", "revoke-access-token"),
    ("basin", "read"): ("list-streams", "get-stream-config", "basin-metrics"),
    ("basin", "write"): ("create-stream", "delete-stream", "reconfigure-stream"),
    ("stream", "read"): ("check-tail", "read", "stream-metrics"),
    ("stream", "write"): ("append", "trim", "fence"),
}
_TOKEN_KEY = "access-tokens/"
_HASH_KEY = "access-token-hashes/"
_MAX_ID_BYTES = 96
_CACHE_S = 1.0


def denied(message: str) -> HttpError:
    return HttpError(403, "permission_denied", message)


@dataclass(frozen=True)
class ResourceSet:
    """S2's ResourceSet: one exact name (empty: nothing) or a prefix (empty: all)."""

    value: str
    prefix: bool

    def matches(self, name: str) -> bool:
        return name.startswith(self.value) if self.prefix else bool(self.value) and \
            name == self.value

    def contains(self, other: ResourceSet | None) -> bool:
        """Every name `other` matches, this matches too."""
        if other is None or (not other.prefix and not other.value):
            return True
        if self.prefix:
            return other.value.startswith(self.value)
        return not other.prefix and bool(self.value) and other.value == self.value

    def to_json(self) -> dict:
        return {"prefix" if self.prefix else "exact": self.value}


def _resource_set(value, what: str) -> ResourceSet | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or not (
            {"exact", "prefix"} & set(value)) or not isinstance(next(iter(value.values())), str):
        raise invalid(f"scope.{what} must be {{\"exact\": name}} or {{\"prefix\": prefix}}")
    kind, name = next(iter(value.items()))
    return ResourceSet(name, kind == "prefix")


@dataclass(frozen=True)
class Principal:
    """Who a request runs as: a token's id (None: a root token, or auth off), what it
    may do, and until when."""

    id: str | None
    ops: frozenset
    basins: ResourceSet | None
    streams: ResourceSet | None
    tokens: ResourceSet | None
    auto_prefix: bool = False
    expires_ms: int | None = None
    info: dict | None = None  # the AccessTokenInfo as the API shows it

    def check(self, op: str, basin: str | None = None, stream: str | None = None) -> None:
        """403 unless this principal may run `op` (on `basin` and `stream`)."""
        if op not in self.ops:
            raise denied(f"operation {op!r} is not permitted by this access token")
        if basin is not None and (self.basins is None or not self.basins.matches(basin)):
            raise denied(f"basin {basin!r} is not in this access token's scope")
        if stream is not None and (self.streams is None or not self.streams.matches(stream)):
            raise denied(f"stream {stream!r} is not in this access token's scope")

    def check_token_id(self, op: str, token_id: str) -> None:
        self.check(op)
        if self.tokens is None or not self.tokens.matches(token_id):
            raise denied(f"access token {token_id!r} is not in this access token's scope")

    def stream_prefix(self) -> str:
        """What this principal's stream names get in front (auto_prefix_streams)."""
        return self.streams.value if self.auto_prefix and self.streams is not None else ""


ROOT = Principal(None, frozenset(OPERATIONS), ResourceSet("", True), ResourceSet("", True),
                 ResourceSet("", True))


def parse_info(obj, requestor: Principal, now_ms: int) -> Principal:
    """Validate an AccessTokenInfo being issued by `requestor` (422 on anything wrong,
    including a scope wider than the requestor's)."""
    if not isinstance(obj, dict):
        raise HttpError(400, "bad_json", "AccessTokenInfo must be a JSON object")
    unknown = set(obj) - {"id", "expires_at", "auto_prefix_streams", "scope"}
    if unknown:
        raise invalid(f"unknown field(s) {sorted(unknown)} in AccessTokenInfo")
    tid = obj.get("id")
    if not isinstance(tid, str) or not 1 <= len(tid.encode()) <= _MAX_ID_BYTES:
        raise invalid(f"id must be a string of 1 to {_MAX_ID_BYTES} bytes")
    scope = obj.get("scope")
    if not isinstance(scope, dict):
        raise invalid("scope is required and must be an object")
    unknown = set(scope) - {"basins", "streams", "access_tokens", "op_groups", "ops"}
    if unknown:
        raise invalid(f"unknown field(s) {sorted(unknown)} in scope")
    ops = set()
    raw_ops = scope.get("ops") or []
    if not isinstance(raw_ops, list) or any(op not in OPERATIONS for op in raw_ops):
        raise invalid(f"scope.ops must list operations among {list(OPERATIONS)}")
    ops.update(raw_ops)
    groups = scope.get("op_groups") or {}
    if not isinstance(groups, dict) or set(groups) - {"account", "basin", "stream"}:
        raise invalid("scope.op_groups may have account, basin and stream")
    norm_groups = {}
    for level, perms in groups.items():
        if perms is None:
            continue
        if not isinstance(perms, dict) or set(perms) - {"read", "write"} or any(
                not isinstance(v, bool) for v in perms.values()):
            raise invalid(f"scope.op_groups.{level} must be {{\"read\": bool, \"write\": bool}}")
        norm_groups[level] = {"read": perms.get("read", False),
                              "write": perms.get("write", False)}
        for kind in ("read", "write"):
            if perms.get(kind):
                ops.update(GROUPS[(level, kind)])
    if not ops:
        raise invalid("an access token must permit at least one operation")
    basins = _resource_set(scope.get("basins"), "basins")
    streams = _resource_set(scope.get("streams"), "streams")
    tokens = _resource_set(scope.get("access_tokens"), "access_tokens")
    auto = obj.get("auto_prefix_streams", False)
    if not isinstance(auto, bool):
        raise invalid("auto_prefix_streams must be a boolean")
    if auto and (streams is None or not streams.prefix or not streams.value):
        raise invalid("auto_prefix_streams needs a non-empty stream prefix in scope.streams")
    expires = obj.get("expires_at")
    if expires is None:
        expires_ms = requestor.expires_ms
    else:
        expires_ms = _parse_time(expires)
        if expires_ms <= now_ms:
            raise invalid("expires_at must be in the future")
        if requestor.expires_ms is not None and expires_ms > requestor.expires_ms:
            raise invalid("expires_at is later than the issuing token's expiry")
    if not (ops <= requestor.ops and _within(requestor.basins, basins)
            and _within(requestor.streams, streams) and _within(requestor.tokens, tokens)):
        raise invalid("the scope is wider than the issuing access token's")
    if requestor.auto_prefix and streams is not None:
        # the issuer sees stream names without its prefix: so does what it scopes
        streams = ResourceSet(requestor.stream_prefix() + streams.value, streams.prefix)
    info = {"id": tid, "expires_at": _format_time(expires_ms), "auto_prefix_streams": auto,
            "scope": {"basins": basins and basins.to_json(),
                      "streams": streams and streams.to_json(),
                      "access_tokens": tokens and tokens.to_json(),
                      "op_groups": norm_groups or None,
                      "ops": sorted(raw_ops) or None}}
    return Principal(tid, frozenset(ops), basins, streams, tokens, auto, expires_ms, info)


def _within(outer: ResourceSet | None, inner: ResourceSet | None) -> bool:
    if outer is None:
        return inner is None or (not inner.prefix and not inner.value)
    return outer.contains(inner)


def _parse_time(value) -> int:
    if not isinstance(value, str):
        raise invalid("expires_at must be an RFC 3339 timestamp")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(f"expires_at {value!r} is not an RFC 3339 timestamp") from None
    if t.tzinfo is None:  # (not RFC 3339, but what a naive datetime prints): taken as UTC
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def _format_time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace(
        "+00:00", "Z")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _principal(row: dict) -> Principal:
    info = row["info"]
    scope = info["scope"]
    ops = set(scope.get("ops") or ())
    for level, perms in (scope.get("op_groups") or {}).items():
        for kind in ("read", "write"):
            if perms and perms.get(kind):
                ops.update(GROUPS[(level, kind)])

    def rs(v):
        return None if v is None else _resource_set(v, "")
    return Principal(info["id"], frozenset(ops), rs(scope.get("basins")),
                     rs(scope.get("streams")), rs(scope.get("access_tokens")),
                     info.get("auto_prefix_streams", False), row.get("expires_ms"), info)


class AccessTokens:
    """The tokens of this server: root ones from the configuration, issued ones in
    metadata."""

    def __init__(self, metadata: MetadataStore, root_tokens: list[str] | None = None,
                 clock=time) -> None:
        self.metadata = metadata
        self._roots = [t.encode() for t in root_tokens or []]
        self.clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    @property
    def enforced(self) -> bool:
        """Whether a request needs a token at all (root tokens are configured)."""
        return bool(self._roots)

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    async def authenticate(self, header: str | None) -> Principal:
        """The principal of a request's Authorization header (401/403 when refused)."""
        token = None
        if header:
            scheme, _, rest = header.partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                token = rest.strip()
        if token is None:
            if self.enforced:
                raise HttpError(401, "permission_denied", "a bearer access token is required",
                                headers=(("www-authenticate", "Bearer"),))
            return ROOT
        given = token.encode()
        # compare against every root token so the time taken does not tell which is close
        root = False
        for t in self._roots:
            root |= hmac.compare_digest(given, t)
        if root:
            return ROOT
        p = await self._lookup(_hash(token))
        if p is None:
            if self.enforced:
                raise denied("invalid access token")
            return ROOT
        if p.expires_ms is not None and p.expires_ms <= self._now_ms():
            raise denied("the access token has expired")
        return p

    async def _lookup(self, digest: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = None
        row = await self.metadata.get(_HASH_KEY + digest)
        if row is not None:
            tok = await self.metadata.get(_TOKEN_KEY + row.value.decode())
            if tok is not None:
                data = json.loads(tok.value)
                if data["hash"] == digest:
                    found = _principal(data)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_S, found)
        return found

    async def issue(self, requestor: Principal, obj) -> str:
        """Issue the token `obj` (an AccessTokenInfo) describes; returns its secret."""
        p = parse_info(obj, requestor, self._now_ms())
        requestor.check_token_id("issue-access-token", p.id)
        token = "s2t_" + secrets.token_urlsafe(32)
        digest = _hash(token)
        row = {"info": p.info, "hash": digest, "expires_ms": p.expires_ms}
        try:
            await self.metadata.write_batch([
                Op("put", _TOKEN_KEY + p.id, json.dumps(row).encode()),
                Op("put", _HASH_KEY + digest, p.id.encode())])
        except VersionMismatch:
            raise HttpError(409, "resource_already_exists",
                            f"access token {p.id!r} already exists") from None
        self._cache.pop(digest, None)
        return token

    async def revoke(self, requestor: Principal, token_id: str) -> None:
        requestor.check_token_id("revoke-access-token", token_id)
        row = await self.metadata.get(_TOKEN_KEY + token_id)
        if row is None:
            raise HttpError(404, "access_token_not_found",
                            f"access token {token_id!r} does not exist")
        digest = json.loads(row.value)["hash"]
        try:
            await self.metadata.write_batch([
                Op("delete", _TOKEN_KEY + token_id, expected_version=row.version),
                Op("delete", _HASH_KEY + digest)])
        except VersionMismatch:
            raise HttpError(404, "access_token_not_found",
                            f"access token {token_id!r} does not exist") from None
        self._cache.pop(digest, None)

    async def list(self, requestor: Principal, prefix: str, start_after: str,
                   limit: int) -> tuple[list[dict], bool]:
        """The infos of the tokens in `requestor`'s scope, a page at a time."""
        requestor.check("list-access-tokens")
        out: list[dict] = []
        after = _TOKEN_KEY + start_after if start_after else ""
        while True:
            rows = await self.metadata.list_prefix(_TOKEN_KEY + prefix, start_after=after,
                                                   limit=limit + 1)
            for key, v in rows:
                tid = key[len(_TOKEN_KEY):]
                if requestor.tokens is not None and requestor.tokens.matches(tid):
                    if len(out) == limit:
                        return out, True
                    out.append(json.loads(v.value)["info"])
            if len(rows) <= limit:
                return out, False
            after = rows[-1][0]


def principal_of(req) -> Principal:
    """The principal the router put on `req` (ROOT for a request that has none)."""
    return req.principal or ROOT


def check_commands(req, records, basin: str, stream: str) -> None:
    """A `trim` or `fence` command record needs its own operation besides append."""
    p = principal_of(req)
    for r in records:
        if len(r.headers) == 1 and r.headers[0][0] == b"":
            op = r.headers[0][1].decode("latin-1")
            if op in ("trim", "fence"):
                p.check(op, basin, stream)


def narrow(rs: ResourceSet | None, prefix: str) -> str | None:
    """The listing prefix that covers what `rs` allows under `prefix`; None: nothing
    (the listed names are still filtered with `rs.matches` for an exact set)."""
    if rs is None or (not rs.prefix and not rs.value):
        return None
    if rs.value.startswith(prefix):
        return rs.value
    if rs.prefix and prefix.startswith(rs.value):
        return prefix
    return None
