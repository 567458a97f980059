"""Kafka retention on s2core streams: `retention.ms` and `retention.bytes` applied to closed
segments (a partition's offloaded sections), never to the active part still in memory.

Kafka deletes a closed segment once its largest timestamp is older than retention.ms, or
while the partition is larger than retention.bytes; the active segment is never deleted.
Only topics whose cleanup.policy includes "delete" are trimmed: a compact-only topic (a
Kafka Connect or Schema Registry topic, say) keeps its records whatever their age.
We do the same with sections, by appending a span-0 trim record (the high watermark does
not move) up to the end of the last section that may go.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from s2core.errors import NotServed, S2Error, StreamNotFound
from s2core.records import trim_record

if TYPE_CHECKING:
    from broker.kafka import Broker

log = logging.getLogger(__name__)


def trim_point(sections: list[tuple[int, int, int, int]], now_ms: int, retention_ms: int,
               retention_bytes: int) -> int:
    """The seq to trim below: the end of the longest prefix of sections that may go."""
    point = 0
    total = sum(s[3] for s in sections)
    for _, end, newest, nbytes in sections:
        expired = retention_ms >= 0 and newest < now_ms - retention_ms
        too_big = retention_bytes >= 0 and total > retention_bytes
        if not (expired or too_big):
            break
        point = end
        total -= nbytes
    return point


async def enforce(broker: Broker) -> int:
    """One pass over every partition; returns how many partitions were trimmed."""
    trimmed = 0
    now = broker.store.clock.now_ms()
    for topic in list(broker.topics.topics.values()):
        if "delete" not in topic.config("cleanup.policy").split(","):
            continue  # compact-only: Kafka never deletes its records by time or size
        ms = int(topic.config("retention.ms"))
        nbytes = int(topic.config("retention.bytes"))
        if ms < 0 and nbytes < 0:
            continue
        for p in range(topic.partitions):
            name = broker.stream(topic.name, p)
            try:
                sections = await broker.store.offloaded_sections(broker.basin, name)
                point = trim_point(sections, now, ms, nbytes)
                if point > await broker.store.first_seq(broker.basin, name):
                    rec = trim_record(point)
                    rec.span = 0
                    await broker.store.append(broker.basin, name, [rec])
                    trimmed += 1
            except (StreamNotFound, NotServed):  # (another broker's partition: its job)
                continue
            except S2Error as e:
                log.warning("retention of %s failed: %s", name, e)
    return trimmed


async def run(broker: Broker, stop: asyncio.Event, interval_s: float = 30.0) -> None:
    """Apply retention every `interval_s` until `stop` is set."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            try:
                await enforce(broker)
            except Exception:  # noqa: BLE001 - retention must not stop the broker
                log.exception("retention pass failed")
