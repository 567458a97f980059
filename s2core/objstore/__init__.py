"""Object stores: the one small interface behind chunk replicas and segments.

`open_object_store(url)` picks the backend from a URL:

- `memory://name` — MemoryObjectStore (a new, empty store each call)
- `file:///abs/path?fsync=false` — LocalDirObjectStore rooted at /abs/path
- `s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&region=us-east-1` — S3ObjectStore

Query parameters and keyword options are passed to the store's constructor (keyword
options win); "true"/"false" and numbers in the query are converted.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from s2core.errors import InvalidArgument
from s2core.objstore.base import ObjectExists, ObjectNotFound, ObjectStore, PreconditionError

__all__ = [
    "ObjectExists",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionError",
    "open_object_store",
]


def open_object_store(url: str, **opts: Any) -> ObjectStore:
    """The object store named by `url` (see the module docstring)."""
    parts = urlsplit(url)
    params: dict[str, Any] = {k: _convert(v) for k, v in parse_qsl(parts.query)}
    params.update(opts)
    if parts.scheme == "memory":
        from s2core.objstore.memory import MemoryObjectStore

        return MemoryObjectStore(name=parts.netloc + parts.path or "memory", **params)
    if parts.scheme == "file":
        from s2core.objstore.localdir import LocalDirObjectStore

        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidArgument(f"file URL needs an absolute path: {url!r}")
        return LocalDirObjectStore(unquote(parts.path), **params)
    if parts.scheme == "s3":
        from s2core.objstore.s3 import S3ObjectStore

        if not parts.netloc:
            raise InvalidArgument(f"s3 URL needs a bucket: {url!r}")
        return S3ObjectStore(parts.netloc, unquote(parts.path.lstrip("/")), **params)
    raise InvalidArgument(f"unknown object store URL scheme: {url!r}")


def _convert(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for number in (int, float):
        try:
            return number(value)
        except ValueError:
            pass
    return value
