"""The segment catalog: where each stream's offloaded records live, and reading them back.

Rows `seg/<uid>/<first_seq>` point at a section (object key, offset, length) and carry its
end seq and timestamp range. Per-stream row lists and decoded sections are cached in
bounded LRUs; the offloader tells the catalog about new rows so the cache stays current.
"""
from __future__ import annotations

import asyncio
import bisect
import json
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from s2core.errors import Corrupt, Indeterminate, S2Error, Unavailable
from s2core.metadata.base import MetadataStore, Op, VersionMismatch
from s2core.objstore.base import ObjectNotFound, ObjectStore
from s2core.records import SequencedRecord
from s2core.segment import Section, SectionBuilder, parse_section
from s2core.sweep import ObjectsInFlight


class _Missing(Corrupt):
    """A section's object is gone: a compaction or purge replaced or removed its row."""


@dataclass
class RewriteStats:
    """What one `SegmentCatalog.rewrite` did."""

    sections_read: int = 0
    sections_written: int = 0
    records_read: int = 0
    records_dropped: int = 0
    records_changed: int = 0
    bytes_before: int = 0  # of the sections that were rewritten
    bytes_after: int = 0
    conflict: bool = False  # a concurrent purge or rewrite won: nothing more was done


class SegmentCatalog:
    """Lookup and cached reads of segment sections."""

    def __init__(self, metadata: MetadataStore, segments: ObjectStore,
                 max_streams: int = 4096, max_cached_bytes: int = 64 * 1024 * 1024,
                 rng: random.Random | None = None) -> None:
        self.metadata = metadata
        self.rng = rng or random.Random()
        self.segments = segments
        self._rows: OrderedDict[bytes, tuple[list[int], list[dict]]] = OrderedDict()
        self._sections: OrderedDict[tuple[str, int], Section] = OrderedDict()
        self._cached_bytes = 0
        self._fetching: dict[tuple[str, int], asyncio.Future] = {}
        self.max_streams = max_streams
        self.max_cached_bytes = max_cached_bytes
        self.read_attempts = 4
        # keys being written, for the orphan sweep (s2core/sweep.py); the store shares one
        self.in_flight = ObjectsInFlight()

    async def rows(self, uid: bytes) -> tuple[list[int], list[dict]]:
        hit = self._rows.get(uid)
        if hit is not None:
            self._rows.move_to_end(uid)
            return hit
        starts, rows = [], []
        for key, v in await self.metadata.list_prefix(f"seg/{uid.hex()}/"):
            starts.append(int(key.rsplit("/", 1)[1]))
            rows.append(json.loads(v.value))
        entry = (starts, rows)
        self._rows[uid] = entry
        if len(self._rows) > self.max_streams:
            self._rows.popitem(last=False)
        return entry

    def on_new_section(self, uid: bytes, first_seq: int, key: str, offset: int, size: int,
                       end: int, first_ts: int, last_ts: int) -> None:
        """An offload published a section row (its fields as the row's JSON has them); the
        row is built only for a stream whose rows are cached (10,000 sections a pass)."""
        hit = self._rows.get(uid)
        if hit is not None:
            starts, rows = hit
            if not starts or first_seq > starts[-1]:
                starts.append(first_seq)
                rows.append({"k": key, "o": offset, "n": size, "e": end, "t0": first_ts,
                             "t1": last_ts})
            else:
                self._rows.pop(uid)

    def forget(self, uid: bytes) -> None:
        self._rows.pop(uid, None)

    async def section(self, row: dict) -> Section:
        key = (row["k"], row["o"])
        sec = self._sections.get(key)
        if sec is not None:
            self._sections.move_to_end(key)
            return sec
        fetching = self._fetching.get(key) or self._start_fetch(key, row)
        return await asyncio.shield(fetching)  # one read per section, however many wait

    async def _fetch_and_cache(self, row: dict) -> Section:
        sec = await self._fetch(row)
        self._sections[(row["k"], row["o"])] = sec
        self._cached_bytes += row["n"]
        while self._cached_bytes > self.max_cached_bytes and len(self._sections) > 1:
            (k, o), old = self._sections.popitem(last=False)
            self._cached_bytes -= len(old.data)
        return sec

    def _read_ahead(self, row: dict) -> None:
        """Start reading the section a sequential reader will want next."""
        key = (row["k"], row["o"])
        if key not in self._sections and key not in self._fetching:
            self._start_fetch(key, row)

    def _start_fetch(self, key: tuple[str, int], row: dict) -> asyncio.Future:
        fut = self._fetching[key] = asyncio.ensure_future(self._fetch_and_cache(row))

        def done(f: asyncio.Future) -> None:
            self._fetching.pop(key, None)
            if not f.cancelled():
                f.exception()  # a failed read-ahead is retried by the reader that needs it
        fut.add_done_callback(done)
        return fut

    async def _fetch(self, row: dict) -> Section:
        """Read and verify a section; transient failures and bad reads are retried a few
        times (reads are idempotent) before the error reaches the reader."""
        attempt = 0
        while True:
            attempt += 1
            try:
                raw = await self.segments.get_range(row["k"], row["o"], row["o"] + row["n"])
                return parse_section(raw)
            except ObjectNotFound as e:
                raise _Missing(f"segment object {row['k']} is missing") from e
            except (Unavailable, Indeterminate, Corrupt):
                if attempt >= self.read_attempts:
                    raise
            await asyncio.sleep(0.005 * 2 ** attempt)

    async def iter_records(self, uid: bytes, start_seq: int, stop_seq: int,
                           views: bool = False) -> AsyncIterator[SequencedRecord]:
        """Records from the one containing `start_seq` up to (excluding) `stop_seq`; with
        `views`, bodies are memoryviews into the cached section (no copy)."""
        starts, rows = await self.rows(uid)
        i = max(0, bisect.bisect_right(starts, start_seq) - 1)
        seq = start_seq
        missed = -1  # the seq at which a section's object was last found missing
        while i < len(rows) and seq < stop_seq:
            row = rows[i]
            if row["e"] <= seq:
                i += 1
                continue
            try:
                sec = await self.section(row)
            except _Missing:
                # a compaction replaced the row (or a purge removed it) since the rows
                # were read: read them again, once per position
                if missed == seq:
                    raise
                missed = seq
                self.forget(uid)
                starts, rows = await self.rows(uid)
                i = max(0, bisect.bisect_right(starts, seq) - 1)
                continue
            if i + 1 < len(rows):
                self._read_ahead(rows[i + 1])
            j = sec.index_of_seq(seq)
            while j < len(sec) and seq < stop_seq:
                rec = sec.record(j, views)
                if rec.seq_num >= stop_seq:
                    return
                yield rec
                seq = rec.end_seq
                j += 1
            i += 1

    async def seq_for_timestamp(self, uid: bytes, ts: int) -> int | None:
        """Seq of the first offloaded record with timestamp >= ts, or None."""
        starts, rows = await self.rows(uid)
        for row in rows:
            if row["t1"] >= ts:
                sec = await self.section(row)
                j = sec.index_of_timestamp(ts)
                if j < len(sec):
                    return sec.seqs[j]
        return None

    async def purge(self, uid: bytes, below: int | None) -> int:
        """Remove catalog rows (and unreferenced objects) of `uid` ending at or below
        `below` (all rows when None). Returns the number of rows removed."""
        starts, rows = await self.rows(uid)
        removed = 0
        for start, row in list(zip(starts, rows)):
            if below is not None and row["e"] > below:
                break
            gone = False
            while True:
                obj_key = f"obj/{row['k']}"
                seg_key = f"seg/{uid.hex()}/{start:020d}"
                seg = await self.metadata.get(seg_key)
                if seg is None:  # purged meanwhile (by another pass or process): its
                    gone = True  # object's live count was lowered by that purge
                    break
                obj = await self.metadata.get(obj_key)
                # conditional on the row's version: only one purge lowers the live count
                ops = [Op("delete", seg_key, expected_version=seg.version)]
                live = 0
                if obj is not None:
                    live = json.loads(obj.value)["live"] - 1
                    ops.append(Op("delete", obj_key, expected_version=obj.version) if live <= 0
                               else Op("put", obj_key, json.dumps({"live": live}).encode(),
                                       obj.version))
                try:
                    await self.metadata.write_batch(ops)
                    break
                except VersionMismatch:
                    continue
            if gone:
                continue
            if live <= 0:
                try:
                    await self.segments.delete(row["k"])
                except S2Error:
                    pass  # an orphan object costs storage only; the catalog no longer uses it
            removed += 1
        self.forget(uid)
        return removed

    async def rewrite(self, uid: bytes, upto: int,
                      rewrite: Callable[[SequencedRecord], SequencedRecord | None], *,
                      object_prefix: str, group_bytes: int, tick=None,
                      pace=None, writer: tuple[str, int] | None = None) -> RewriteStats:
        """Rewrite the sections of `uid` that end at or below `upto`, in order: `rewrite`
        gets each record and returns it (kept as it is), another record with the same
        seq_num, span and timestamp (its headers and body replaced), or None (dropped:
        the stream then has a gap of seq_nums there, which readers step over).

        Consecutive sections are taken in groups of up to `group_bytes`; a group in
        which some record changed becomes one new section in a new object (so small
        sections out of shared objects are merged as they are compacted). Each group is
        published by one metadata batch conditional on the versions of the rows it
        replaces and of their objects' live counts: a purge or another rewrite that
        got there first makes it a conflict, the new object is deleted and the pass
        stops. Objects left with no live section are deleted once the batch is in.
        `tick` (awaited after each record) lets the loop run between slices; `pace()`
        gives the pace of each new object's put (see LocalDirObjectStore.put).
        `writer` (channel, lease epoch) is named in the new objects' keys, for the orphan
        sweep (s2core/sweep.py).

        The caller serializes rewrites and purges of one stream (both lower live
        counts)."""
        stats = RewriteStats()
        starts, rows = await self.rows(uid)
        todo = [(start, row) for start, row in zip(starts, rows) if row["e"] <= upto]
        k = 0
        while k < len(todo):
            group = [todo[k]]
            size = todo[k][1]["n"]
            k += 1
            while k < len(todo) and size + todo[k][1]["n"] <= group_bytes:
                size += todo[k][1]["n"]
                group.append(todo[k])
                k += 1
            out: list[SequencedRecord] = []
            changed = False
            for _, row in group:
                sec = await self.section(row)
                stats.sections_read += 1
                for j in range(len(sec)):
                    rec = sec.record(j)
                    new = rewrite(rec)
                    stats.records_read += 1
                    if new is None:
                        stats.records_dropped += 1
                        changed = True
                    else:
                        if new is not rec:
                            if (new.seq_num, new.span, new.timestamp) != (
                                    rec.seq_num, rec.span, rec.timestamp):
                                raise ValueError("a rewritten record keeps its seq_num, "
                                                 "span and timestamp")
                            stats.records_changed += 1
                            changed = True
                        out.append(new)
                    if tick is not None:
                        await tick()
            if not changed:
                continue
            if not await self._replace(uid, group, out, object_prefix, stats, tick, pace,
                                       writer):
                stats.conflict = True
                break
        return stats

    async def _replace(self, uid: bytes, group: list[tuple[int, dict]],
                       records: list[SequencedRecord], object_prefix: str,
                       stats: RewriteStats, tick=None, pace=None, writer=None) -> bool:
        """Put `records` in place of the sections of `group` (see `rewrite`)."""
        if not records:
            return await self._replace_with(uid, group, records, None, stats, tick, pace)
        first = records[0].seq_num
        new_key = (f"{object_prefix}/{uid.hex()}/{first:020d}-{group[-1][1]['e']:020d}-"
                   f"{self.rng.getrandbits(48):012x}")
        if writer is not None:
            new_key += f"-{writer[1]:010d}-{writer[0]}"
        with self.in_flight.writing([new_key]):  # (the orphan sweep leaves it alone)
            return await self._replace_with(uid, group, records, new_key, stats, tick, pace)

    async def _replace_with(self, uid: bytes, group: list[tuple[int, dict]],
                            records: list[SequencedRecord], new_key: str | None,
                            stats: RewriteStats, tick=None, pace=None) -> bool:
        new_row = None
        if records:
            b = SectionBuilder(uid)
            for i in range(0, len(records), 64):
                b.add(records[i:i + 64])
                if tick is not None:
                    await tick()
            parts = b.finish()
            blob = b"".join(parts)
            paced = pace() if pace is not None else None
            await self.segments.put(new_key, blob, **({"pace": paced} if paced else {}))
            new_row = {"k": new_key, "o": 0, "n": len(blob), "e": records[-1].end_seq,
                       "t0": records[0].timestamp, "t1": records[-1].timestamp}
        ops: list[Op] = []
        gone_objects: list[str] = []
        used: dict[str, int] = {}
        replaced = False
        new_seg = f"seg/{uid.hex()}/{records[0].seq_num:020d}" if records else None
        for start, row in group:
            seg_key = f"seg/{uid.hex()}/{start:020d}"
            cur = await self.metadata.get(seg_key)
            if cur is None or json.loads(cur.value) != row:
                return await self._abandon(uid, new_key)
            if seg_key == new_seg:
                ops.append(Op("put", seg_key, json.dumps(new_row).encode(), cur.version))
                replaced = True
            else:
                ops.append(Op("delete", seg_key, expected_version=cur.version))
            used[row["k"]] = used.get(row["k"], 0) + 1
        for obj, n in used.items():
            cur = await self.metadata.get(f"obj/{obj}")
            live = (json.loads(cur.value)["live"] if cur is not None else 0) - n
            if cur is None:
                pass  # (an object of an old version, with no live count: goes with its rows)
            elif live > 0:
                ops.append(Op("put", f"obj/{obj}", json.dumps({"live": live}).encode(),
                              cur.version))
            else:
                ops.append(Op("delete", f"obj/{obj}", expected_version=cur.version))
            if live <= 0:
                gone_objects.append(obj)
        if records:
            if not replaced:
                ops.append(Op("put", new_seg, json.dumps(new_row).encode()))
            ops.append(Op("put", f"obj/{new_key}", json.dumps({"live": 1}).encode()))
        try:
            await self.metadata.write_batch(ops)
        except VersionMismatch:
            return await self._abandon(uid, new_key)
        except Indeterminate:
            self.forget(uid)  # the batch may be in: the new object may be live, keep it
            raise
        self.forget(uid)
        for _, row in group:
            old = self._sections.pop((row["k"], row["o"]), None)
            if old is not None:
                self._cached_bytes -= len(old.data)
        for obj in gone_objects:
            try:
                await self.segments.delete(obj)
            except S2Error:
                pass  # an orphan object costs storage only; the catalog no longer uses it
        stats.sections_written += bool(records)
        stats.bytes_before += sum(row["n"] for _, row in group)
        stats.bytes_after += new_row["n"] if new_row else 0
        return True

    async def _abandon(self, uid: bytes, new_key: str | None) -> bool:
        self.forget(uid)
        if new_key is not None:
            try:
                await self.segments.delete(new_key)
            except S2Error:
                pass
        return False
