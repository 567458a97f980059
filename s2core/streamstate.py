"""Per-stream state held by a channel while the stream is active.

An idle, fully offloaded stream has no StreamState at all: its position lives in its
metadata checkpoint row, so a million idle streams cost a million rows and no RAM.
"""
from __future__ import annotations

import asyncio
import bisect
from json.encoder import encode_basestring_ascii as _quote

from s2core.records import SEQ, SPAN, TS, SequencedRecord, StreamPosition


class StreamState:
    """Sequencing position, command state and the in-memory tail of one stream.

    `next_seq`/`last_ts`/`token` include appends still being replicated; `durable_seq`/
    `durable_ts`/`durable_token`/`trim_seq` only what is acknowledged. In memory: records
    [mem_first, durable_seq); in segments: [.., offloaded_upto); mem_first <= offloaded_upto.
    """

    __slots__ = (
        "uid", "next_seq", "last_ts", "token", "durable_token", "durable_seq", "durable_ts",
        "trim_seq",
        "offloaded_upto", "ckpt_version", "mem_seqs", "mem_recs", "waiters",
        "sealed", "deleted", "basin", "name", "pending", "__weakref__",
    )

    def __init__(self, uid: bytes, basin: str, name: str, ckpt: dict, ckpt_version: int) -> None:
        self.uid = uid
        self.basin = basin
        self.name = name
        self.next_seq = self.durable_seq = self.offloaded_upto = ckpt["next"]
        self.last_ts = self.durable_ts = ckpt["ts"]
        self.token: str = ckpt["tok"]
        self.durable_token: str = self.token
        self.trim_seq: int = ckpt["trim"]
        self.ckpt_version = ckpt_version
        self.mem_seqs: list[int] = []
        # The tail's records as plain tuples of SequencedRecord's fields: the garbage
        # collector stops tracking a tuple of ints and bytes the first time it sees one,
        # where it would go through every record of the tail (100,000s) in each
        # collection of its generation. `record(i)` gives one as a SequencedRecord.
        self.mem_recs: list[tuple] = []
        self.waiters: list[asyncio.Future] | None = None
        self.sealed = False
        self.deleted = False
        self.pending = 0  # appends sequenced but not yet durable (span-0 ones included)

    # -- positions ---------------------------------------------------------

    @property
    def tail(self) -> StreamPosition:
        return StreamPosition(self.durable_seq, self.durable_ts)

    @property
    def mem_first(self) -> int:
        return self.mem_seqs[0] if self.mem_seqs else self.durable_seq

    def is_idle(self) -> bool:
        return (not self.mem_seqs and not self.waiters and not self.pending
                and self.next_seq == self.durable_seq
                and self.offloaded_upto == self.durable_seq and not self.sealed)

    def checkpoint(self, offloaded_upto: int | None = None) -> bytes:
        """The metadata checkpoint as of what is offloaded (or will be, once the batch
        carrying it is in: `offloaded_upto`). Replay of later chunks is idempotent for
        token, trim and timestamp, so the durable values are safe to store; a fence still
        being replicated is not: it may never become durable."""
        upto = self.offloaded_upto if offloaded_upto is None else offloaded_upto
        return encode_ckpt(self.basin, self.name, upto, self.durable_ts,
                           self.durable_token, self.trim_seq)

    # -- in-memory tail ----------------------------------------------------

    def publish(self, entry: tuple) -> None:
        """Add a durable record, as a tail entry (a plain tuple: see mem_recs)."""
        seq = entry[SEQ]
        assert seq == self.durable_seq, (seq, self.durable_seq)
        self.mem_seqs.append(seq)
        self.mem_recs.append(entry)
        self.durable_seq = seq + entry[SPAN]
        self.durable_ts = max(self.durable_ts, entry[TS])

    def record(self, i: int) -> SequencedRecord:
        """The `i`th record in memory."""
        return _as_record(SequencedRecord, self.mem_recs[i])

    def records_from(self, i: int, n: int) -> list[SequencedRecord]:
        """At most `n` records in memory from the `i`th on."""
        return [_as_record(SequencedRecord, t) for t in self.mem_recs[i:i + n]]

    def wake(self) -> None:
        if self.waiters:
            for w in self.waiters:
                if not w.done():
                    w.set_result(None)
            self.waiters = None

    def mem_index(self, seq: int) -> int:
        """Index in memory of the record containing `seq` (or the first after it)."""
        i = bisect.bisect_right(self.mem_seqs, seq) - 1
        if i < 0:
            return 0
        rec = self.mem_recs[i]
        return i if rec[SEQ] + rec[SPAN] > seq else i + 1

    def mem_index_ts(self, ts: int) -> int:
        return bisect.bisect_left(self.mem_recs, ts, key=lambda r: r[TS])

    def records_between(self, lo: int, hi: int) -> list[tuple]:
        """In-memory records starting in [lo, hi), as tail entries (plain tuples in
        SequencedRecord's field order)."""
        i = bisect.bisect_left(self.mem_seqs, lo)
        j = bisect.bisect_left(self.mem_seqs, hi)
        return self.mem_recs[i:j]

    def evict_below(self, seq: int) -> None:
        """Drop in-memory records ending at or before `seq` (the channel accounts the
        bytes per chunk)."""
        j = bisect.bisect_left(self.mem_seqs, seq)
        recs = self.mem_recs
        while j > 0 and recs[j - 1][SEQ] + recs[j - 1][SPAN] > seq:
            j -= 1
        if j:
            del self.mem_seqs[:j]
            del self.mem_recs[:j]


_as_record = tuple.__new__  # (SequencedRecord, entry): the entry as a SequencedRecord


def encode_ckpt(basin: str, name: str, nxt: int, ts: int, tok: str, trim: int) -> bytes:
    """The checkpoint row, exactly as json.dumps of the dict would write it, formatted
    directly: an offload of 10,000 streams writes 10,000 of them."""
    return (f'{{"b": {_quote(basin)}, "s": {_quote(name)}, "next": {int(nxt)}, '
            f'"ts": {int(ts)}, "tok": {_quote(tok)}, "trim": {int(trim)}}}').encode()
