"""The consumer embedded protocol (ConsumerProtocolSubscription), as far as the coordinator
reads it: the subscribed topics, for OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC. Pure."""
from __future__ import annotations

import struct


def subscribed_topics(metadata: bytes) -> set[str] | None:
    """Topics of a consumer Subscription (any version); None if it does not parse."""
    try:
        buf = memoryview(metadata)
        (_version, count), pos = struct.unpack_from(">hi", buf, 0), 6
        topics = set()
        for _ in range(count):
            (n,) = struct.unpack_from(">h", buf, pos)
            pos += 2
            if n < 0 or pos + n > len(buf):
                return None
            topics.add(bytes(buf[pos:pos + n]).decode())
            pos += n
        return topics
    except (struct.error, UnicodeDecodeError):
        return None
