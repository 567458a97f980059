"""Segment objects that nothing references: found and deleted, without ever racing a writer.

An object in the segment store is in use while its catalog row `obj/<key>` exists. A
writer puts its objects first and publishes their rows after, so an object can be left
without a row: an offload pass or a compaction that failed between the two (its next
attempt writes new objects), a process killed there, or a delete that failed after the
row went. Such an orphan costs storage only, but forever. `OrphanSweeper.sweep` deletes
an object when all of these hold:

- it has no `obj/` row, in this pass and in the previous one (passes are
  `segments.orphan_sweep_interval_s` apart), so a row published meanwhile is seen;
- its writer can no longer publish it. Object keys name the channel and the epoch of
  their writer's lease (`writer_of`). A writer whose epoch is below its channel's
  current one is fenced: every publish of an offload is conditional on the lease, and a
  process opens every channel (bumping its epoch) before it compacts anything. A writer
  of the current epoch is this process (for a channel it serves), which knows what it is
  still writing (`ObjectsInFlight`) and never sweeps those;
- it is not being written by this process at all (`ObjectsInFlight`).

Keys without a writer (written before keys named one) are left alone.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable

from s2core.errors import S2Error
from s2core.metadata import list_all

log = logging.getLogger(__name__)

PREFIX = "segments/"


class ObjectsInFlight:
    """Keys of segment objects this process is writing and has not published (or given up)
    yet: never orphans."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    @contextlib.contextmanager
    def writing(self, keys: Iterable[str]):
        keys = list(keys)
        self.keys.update(keys)
        try:
            yield
        finally:
            self.keys.difference_update(keys)


def offload_key(uid_hex: str, first: int, epoch: int, n: int, channel: str) -> str:
    """A stream's own segment object, written by `channel` at lease `epoch`."""
    return f"{PREFIX}{uid_hex}/{first:020d}-{epoch:010d}-{n:06d}-{channel}"


def shared_key(channel: str, epoch: int, seq: int, n: int) -> str:
    """A shared segment object (the sections of many small streams)."""
    return f"{PREFIX}shared/{channel}/{epoch:010d}-{seq:012d}-{n:06d}"


def compacted_key(uid_hex: str, first: int, end: int, rand: int, epoch: int,
                  channel: str) -> str:
    """A compaction's rewrite of a stream's sections, by a process whose `channel` was at
    lease `epoch`."""
    return f"{PREFIX}compacted/{uid_hex}/{first:020d}-{end:020d}-{rand:012x}-{epoch:010d}-{channel}"


def writer_of(key: str) -> tuple[str, int] | None:
    """(channel, lease epoch) of the writer named in a segment object's key; None for a
    key that names none (or is not a segment object's)."""
    if not key.startswith(PREFIX):
        return None
    rest = key[len(PREFIX):]
    try:
        if rest.startswith("shared/"):
            channel, _, tail = rest[len("shared/"):].rpartition("/")
            return (channel, int(tail.split("-", 1)[0])) if channel else None
        if rest.startswith("compacted/"):
            parts = rest.split("/", 2)[2].split("-", 4)
            return (parts[4], int(parts[3])) if len(parts) == 5 and parts[4] else None
        parts = rest.split("/", 1)[1].split("-", 3)
        return (parts[3], int(parts[1])) if len(parts) == 4 and parts[3] else None
    except (IndexError, ValueError):
        return None


class OrphanSweeper:
    """Deletes orphan segment objects of `store` (see the module doc), one pass at a
    time; remembers the previous pass's candidates."""

    def __init__(self, store) -> None:
        self.store = store
        self.candidates: set[str] = set()
        self.deleted = 0

    async def sweep(self, tick=None) -> int:
        """One pass: returns how many objects it deleted."""
        store = self.store
        metadata = store.metadata
        listed = await store.segments.list(PREFIX)
        referenced = {k[len("obj/"):] for k, _ in await list_all(metadata, "obj/" + PREFIX)}
        in_flight = store.in_flight.keys
        epochs: dict[str, int | None] = {}
        found: set[str] = set()
        deleted = 0
        for i, key in enumerate(listed):
            if tick is not None and not i & 255:
                await tick()
            if key in referenced or key in in_flight:
                continue
            writer = writer_of(key)
            if writer is None:
                continue
            channel, epoch = writer
            if channel not in epochs:
                epochs[channel] = await self._epoch(channel)
            current = epochs[channel]
            if current is None:
                continue
            mine = channel in store.channels
            if epoch > current or (epoch == current and not mine):
                continue  # a live writer elsewhere may still publish it
            found.add(key)
            if key not in self.candidates:
                continue  # seen for the first time: deleted next pass if still unused
            # the row again, now: published since the listing? (a writer of this process
            # registers its keys before putting them, so one not in flight now is done)
            if key in in_flight or await metadata.get(f"obj/{key}") is not None:
                found.discard(key)
                continue
            try:
                await store.segments.delete(key)
            except S2Error as e:
                log.warning("deleting orphan segment object %s failed: %s", key, e)
                continue
            found.discard(key)
            deleted += 1
        self.candidates = found
        self.deleted += deleted
        if deleted:
            log.info("deleted %d orphan segment objects", deleted)
        return deleted

    async def _epoch(self, channel: str) -> int | None:
        row = await self.store.metadata.get(f"channel/{channel}")
        if row is None:
            return None
        try:
            return int(json.loads(row.value)["epoch"])
        except (ValueError, KeyError, TypeError):
            return None
