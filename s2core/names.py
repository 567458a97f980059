"""Validation of basin and stream names, following S2's rules."""
from __future__ import annotations

import re

from s2core.errors import InvalidArgument

_BASIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
MAX_STREAM_NAME_BYTES = 512


def validate_basin_name(name: str) -> str:
    """Basins: 8-48 characters, lowercase letters, digits and hyphens, no hyphen at the ends."""
    if not isinstance(name, str) or not 8 <= len(name) <= 48 or not _BASIN_RE.match(name):
        raise InvalidArgument(
            f"invalid basin name {name!r}: 8-48 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def validate_stream_name(name: str) -> str:
    """Streams: 1-512 bytes of UTF-8, no NUL."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument("stream name must be a non-empty string")
    if "\x00" in name:
        raise InvalidArgument("stream name must not contain NUL")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_STREAM_NAME_BYTES:
        raise InvalidArgument(f"stream name longer than {MAX_STREAM_NAME_BYTES} bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument("stream name is not valid UTF-8") from e
    return name
