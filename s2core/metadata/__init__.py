"""Metadata stores: the minimal conditional key-value interface.

`open_metadata_store(url)` picks the backend from a URL:

- `memory://` — MemoryMetadataStore (a new, empty store each call)
- `sqlite:///abs/path.db?synchronous=NORMAL` — SqliteMetadataStore on that file
- `postgresql://user:pass@host:5432/dbname?table=kv` (or `postgres://`) —
  PostgresMetadataStore; query parameters that are not its options go to the driver
- `dynamodb://TABLE?region=us-east-1` (`&endpoint_url=http://127.0.0.1:8000` for a local
  DynamoDB API server) — DynamoMetadataStore on that table, created if absent; credentials
  come from botocore's usual chain (environment, config files, instance role); other
  options: `create_table`, `txn_timeout_s`, `lock_wait_s`, `retry_s`, `parallelism`, ...
  (dynamodb.py's STORE_OPTIONS); an unknown one is refused

Query parameters and keyword options are passed to the store's constructor (keyword
options win).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from s2core.errors import InvalidArgument
from s2core.metadata.base import MetadataStore, Op, Versioned, VersionMismatch

__all__ = ["MetadataStore", "Op", "VersionMismatch", "Versioned", "list_all",
           "open_metadata_store"]


async def list_all(metadata: MetadataStore, prefix: str, start_after: str = "",
                   page: int = 1000) -> list[tuple[str, Versioned]]:
    """Every row under `prefix` (after `start_after`), read a page at a time. Callers that
    rebuild a cache from it swap the new one in whole: nothing sees it half-built."""
    out: list[tuple[str, Versioned]] = []
    while True:
        rows = await metadata.list_prefix(prefix, start_after=start_after, limit=page)
        out.extend(rows)
        if len(rows) < page:
            return out
        start_after = rows[-1][0]


def open_metadata_store(url: str, **opts: Any) -> MetadataStore:
    """The metadata store named by `url` (see the module docstring)."""
    parts = urlsplit(url)
    params: dict[str, Any] = dict(parse_qsl(parts.query))
    params.update(opts)
    if parts.scheme == "memory":
        from s2core.metadata.memory import MemoryMetadataStore

        return MemoryMetadataStore(**params)
    if parts.scheme == "sqlite":
        from s2core.metadata.sqlite import SqliteMetadataStore

        if parts.netloc or not parts.path.startswith("/"):
            raise InvalidArgument(f"sqlite URL needs an absolute path (sqlite:///...): {url!r}")
        if "busy_timeout_ms" in params:
            params["busy_timeout_ms"] = int(params["busy_timeout_ms"])
        if isinstance(params.get("write_thread"), str):
            params["write_thread"] = params["write_thread"].lower() == "true"
        return SqliteMetadataStore(unquote(parts.path), **params)
    if parts.scheme in ("postgresql", "postgres"):
        from s2core.metadata.postgres import PostgresMetadataStore

        return PostgresMetadataStore.from_url(url, **opts)
    if parts.scheme == "dynamodb":
        from s2core.metadata.dynamodb import DynamoMetadataStore

        return DynamoMetadataStore.from_url(url, **opts)
    raise InvalidArgument(f"unknown metadata store URL scheme: {parts.scheme!r}")
