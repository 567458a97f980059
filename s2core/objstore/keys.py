"""Object key rules shared by every object store, so a key valid on one backend is valid on all.

Keys are '/'-separated paths of non-empty segments: no leading '/', no '.' or '..' segment,
no empty segment ('a//b', 'a/'), no NUL. These rules let the local-directory store map
keys to files without escaping and without any way to leave its root.
"""
from __future__ import annotations

from s2core.errors import InvalidArgument

MAX_KEY_BYTES = 1024  # S3's limit; the others follow it so keys stay portable


def check_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise InvalidArgument."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"object key must be a non-empty str, got {key!r}")
    if "\x00" in key:
        raise InvalidArgument(f"object key contains NUL: {key!r}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InvalidArgument(f"object key is not valid UTF-8: {key!r}") from e
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(f"object key longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidArgument(f"object key has an empty, '.' or '..' segment: {key!r}")
    return key


def check_range(start: int, end: int) -> None:
    """`get_range` bounds: 0 <= start <= end (end past the object's size is clamped)."""
    if start < 0 or end < start:
        raise InvalidArgument(f"invalid byte range [{start}, {end})")
