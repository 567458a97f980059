"""Committed offsets in memory: group -> (topic, partition) -> OffsetEntry. Pure."""
from __future__ import annotations

from dataclasses import dataclass

MAX_METADATA_BYTES = 4096  # Kafka's offset.metadata.max.bytes (compared to the length)
SNAPSHOT_CHUNK = 500       # offsets per snapshot record


@dataclass(slots=True)
class OffsetEntry:
    """One committed offset (Kafka's OffsetAndMetadata)."""

    offset: int
    leader_epoch: int
    metadata: str
    commit_ms: int

    def to_row(self, topic: str, partition: int) -> list:
        return [topic, partition, self.offset, self.leader_epoch, self.metadata,
                self.commit_ms]


class OffsetTable:
    """All committed offsets of all groups."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[tuple[str, int], OffsetEntry]] = {}

    def get(self, group: str, topic: str, partition: int) -> OffsetEntry | None:
        return self.groups.get(group, {}).get((topic, partition))

    def of_group(self, group: str) -> dict[tuple[str, int], OffsetEntry]:
        return self.groups.get(group, {})

    def has_group(self, group: str) -> bool:
        return bool(self.groups.get(group))

    def put_rows(self, group: str, rows: list[list]) -> None:
        table = self.groups.setdefault(group, {})
        for topic, partition, offset, epoch, metadata, ts in rows:
            table[(topic, partition)] = OffsetEntry(offset, epoch, metadata, ts)

    def delete_rows(self, group: str, keys: list[list]) -> None:
        table = self.groups.get(group)
        if table is None:
            return
        for topic, partition in keys:
            table.pop((topic, partition), None)
        if not table:
            del self.groups[group]

    def drop_group(self, group: str) -> None:
        self.groups.pop(group, None)

    def snapshot_records(self, group: str) -> list[dict]:
        """The group's offsets as journal records (a few hundred offsets per record)."""
        rows = [e.to_row(t, p) for (t, p), e in self.groups.get(group, {}).items()]
        return [{"k": "o", "g": group, "o": rows[i:i + SNAPSHOT_CHUNK]}
                for i in range(0, len(rows), SNAPSHOT_CHUNK)]
