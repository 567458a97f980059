"""Grouping the queued inputs of an append session into one atomic s2core append. Pure.

A session's inputs must be applied in order, one after another (see sessions.py), so a
session with many inputs in flight would go at one store round trip per input. When
several inputs are already waiting, `plan_group` picks how many of them can be applied as
one `StreamStore.append` such that every input gets exactly the outcome (and the ack) it
would have had alone, and `split_ack` cuts the group's ack back into one ack per input.

That holds when, for every input after the first: it has no command records (a fence would
change the token the next input is checked against) and no client timestamps (so every
record of the group gets the one arrival timestamp and per-input acks can be rebuilt); its
fencing token is absent or the first input's; its `match_seq_num`, if any, is exactly where
it would land; and the group stays within the append limits. The first input is checked by
s2core as usual, so a group fails exactly when its first input would.
"""
from __future__ import annotations

from s2core.http.proto import ParsedAppendInput
from s2core.records import AppendAck, AppendRecord, StreamPosition, metered_size


def _plain(records: list[AppendRecord]) -> bool:
    """No command (or malformed) records and no client timestamps."""
    for r in records:
        if r.timestamp is not None:
            return False
        for name, _ in r.headers:
            if not name:
                return False
    return True


def plan_group(inputs: list[ParsedAppendInput], max_records: int, max_bytes: int) -> int:
    """How many inputs from the front of `inputs` (at least 1) to append as one."""
    assert inputs, "nothing to plan"
    first = inputs[0]
    if len(inputs) == 1 or not _plain(first.records):
        return 1
    n_records = len(first.records)
    n_bytes = sum(metered_size(r.headers, r.body) for r in first.records)
    taken = 1
    for inp in inputs[1:]:
        if not inp.records or not _plain(inp.records):
            break
        if inp.fencing_token is not None and inp.fencing_token != first.fencing_token:
            break
        if inp.match_seq_num is not None and (
                first.match_seq_num is None or inp.match_seq_num != first.match_seq_num +
                n_records):
            break
        size = sum(metered_size(r.headers, r.body) for r in inp.records)
        if n_records + len(inp.records) > max_records or n_bytes + size > max_bytes:
            break
        n_records += len(inp.records)
        n_bytes += size
        taken += 1
    return taken


def merge(inputs: list[ParsedAppendInput]) -> ParsedAppendInput:
    """The one input applying `inputs` (a group from `plan_group`)."""
    if len(inputs) == 1:
        return inputs[0]
    records = [r for inp in inputs for r in inp.records]
    return ParsedAppendInput(records, inputs[0].match_seq_num, inputs[0].fencing_token)


def split_ack(ack: AppendAck, counts: list[int]) -> list[AppendAck]:
    """Per-input acks of a group whose inputs had `counts` records each."""
    if len(counts) == 1:
        return [ack]
    assert ack.end.seq_num - ack.start.seq_num == sum(counts), "ack does not cover the group"
    ts = ack.end.timestamp
    # every record of a plain group was stamped with the same arrival time
    assert ack.start.timestamp == ts, "a merged group got more than one timestamp"
    out = []
    seq = ack.start.seq_num
    for n in counts:
        out.append(AppendAck(StreamPosition(seq, ts), StreamPosition(seq + n, ts), ack.tail))
        seq += n
    return out
