"""Kafka topic partitions seen through the S2 API: one S2 record per Kafka record.

The partition stream stores whole Kafka batches; this view expands them for S2 readers:
seq_num = Kafka offset, timestamp = the record's timestamp, body = value (null -> empty),
headers = the Kafka headers (a null header value reads as empty), preceded by the key as
a header named KEY_HEADER when the record has one. Trim command records stay invisible.
"""
from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from broker.protocol.exceptions import DecodeError
from broker.protocol.records import iter_records
from s2core.errors import Corrupt
from s2core.records import ReadBatch, SequencedRecord, metered_size

if TYPE_CHECKING:
    from broker.kafka import Broker

KEY_HEADER = b"kafka.key"
_BASE = struct.Struct(">q")
_PREFIX = "kafka/"


class KafkaS2View:
    """The `kafka_view` hook of the S2 HTTP API."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def is_kafka_stream(self, basin: str, name: str) -> bool:
        if basin != self.broker.basin or not name.startswith(_PREFIX):
            return False
        topic, _, part = name[len(_PREFIX):].rpartition("/")
        t = self.broker.topics.get(topic)
        return t is not None and part.isdigit() and int(part) < t.partitions

    def is_internal(self, basin: str, name: str) -> bool:
        """The broker's own streams (consumer group journals): readable, never writable."""
        return basin == self.broker.basin and name.startswith("kafka-internal/")

    def expand(self, rec: SequencedRecord) -> list[SequencedRecord]:
        """The Kafka records of one stored batch, as S2 records."""
        if rec.is_command():
            return []
        try:
            base = _BASE.unpack_from(rec.body, 0)[0]
            out = []
            cap = self.broker.config.max_batch_decompressed_bytes
            for kr in iter_records(rec.body, 0, max_decompressed=cap):
                headers = [(KEY_HEADER, bytes(kr.key))] if kr.key is not None else []
                headers += [(name.encode(), b"" if value is None else bytes(value))
                            for name, value in kr.headers]
                out.append(SequencedRecord(rec.seq_num + kr.offset - base, kr.timestamp,
                                           tuple(headers),
                                           b"" if kr.value is None else bytes(kr.value)))
            return out
        except (DecodeError, struct.error) as e:
            raise Corrupt(f"stored Kafka batch at {rec.seq_num} does not decode: {e}") from e

    def _trim(self, records, start: int, count: int | None, max_bytes: int | None,
              until: int | None) -> tuple[list[SequencedRecord], bool]:
        """Records from `start` within the limits; True if a limit (or until) was hit."""
        out, size = [], 0
        for batch_rec in records:
            for r in self.expand(batch_rec):
                if r.seq_num < start:
                    continue
                if until is not None and r.timestamp >= until:
                    return out, True
                n = metered_size(r.headers, r.body)
                if out and ((count is not None and len(out) >= count)
                            or (max_bytes is not None and size + n > max_bytes)):
                    return out, True
                out.append(r)
                size += n
        return out, False

    async def read(self, basin: str, name: str, *, seq_num: int | None = None,
                   timestamp: int | None = None, tail_offset: int | None = None,
                   count: int | None = None, max_bytes: int | None = None,
                   until: int | None = None, clamp: bool = False) -> ReadBatch:
        store = self.broker.store
        count = count or 1000
        max_bytes = max_bytes or 1024 * 1024
        if tail_offset is not None:
            tail = await store.check_tail(basin, name)
            seq_num, tail_offset = max(0, tail.seq_num - tail_offset), None
        batch = await store.read(basin, name, seq_num=seq_num, timestamp=timestamp,
                                 count=count, max_bytes=max_bytes, clamp=clamp)
        start = seq_num if seq_num is not None else (
            batch.records[0].seq_num if batch.records else 0)
        if timestamp is not None:
            recs = [r for b in batch.records for r in self.expand(b)
                    if r.timestamp >= timestamp]
            start = recs[0].seq_num if recs else start
        records, _ = self._trim(batch.records, start, count, max_bytes, until)
        return ReadBatch(records, batch.tail)

    async def read_session(self, basin: str, name: str, *, seq_num: int | None = None,
                           timestamp: int | None = None, tail_offset: int | None = None,
                           count: int | None = None, max_bytes: int | None = None,
                           until: int | None = None, clamp: bool = False,
                           wait_s: float | None = None,
                           heartbeat_s: float = 5.0) -> AsyncIterator[ReadBatch]:
        store = self.broker.store
        if seq_num is None:
            first = await self.read(basin, name, timestamp=timestamp, tail_offset=tail_offset,
                                    count=1, clamp=clamp)
            seq_num = first.records[0].seq_num if first.records else first.tail.seq_num
        left_n, left_b = count, max_bytes
        session = store.read_session(basin, name, seq_num=seq_num, clamp=clamp,
                                     wait_s=wait_s, heartbeat_s=heartbeat_s)
        try:
            async for batch in session:
                if not batch.records:
                    yield batch
                    continue
                records, hit = self._trim(batch.records, seq_num, left_n, left_b, until)
                if records:
                    yield ReadBatch(records, batch.tail)
                    seq_num = records[-1].seq_num + 1
                    if left_n is not None:
                        left_n -= len(records)
                    if left_b is not None:
                        left_b -= sum(metered_size(r.headers, r.body) for r in records)
                if hit or (left_n is not None and left_n <= 0) or \
                        (left_b is not None and left_b <= 0):
                    return
        finally:
            await session.aclose()
