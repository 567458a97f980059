"""Kafka log compaction (broker/cleaner.py) on a broker's offloaded sections: the last
record of each key stays at its offset, older ones and expired tombstones go, and the
cleaner follows min.cleanable.dirty.ratio, min/max.compaction.lag.ms and its dedupe
buffer as Kafka's does."""
from __future__ import annotations

import json

import pytest

from broker import cleaner as cleaner_mod
from broker.cleaner import LogCleaner, checkpoint_key
from broker.protocol.records import Compression, Record, build_batch, iter_records
from s2core.channel import ChannelConfig
from s2core.records import AppendRecord

BASIN = "test-basin"
DAY = 86_400_000


@pytest.fixture
async def broker(memory_broker):
    b = await memory_broker(channel=ChannelConfig(offload_target_bytes=2048,
                                                  offload_interval_s=3600), basin=BASIN)
    b.now = 1_800_000_000_000
    b.store.clock.now_ms = lambda: b.now
    return b


async def produce(b, topic: str, pairs: list[tuple[bytes | None, bytes | None]], *,
                  ts: int | None = None, compression=Compression.NONE, producer_id=-1,
                  partition: int = 0) -> int:
    """Append one batch as the Produce service stores it; returns its base offset."""
    ts = b.now if ts is None else ts
    raw = build_batch([Record(i, ts, k, v) for i, (k, v) in enumerate(pairs)],
                      compression=compression, producer_id=producer_id,
                      producer_epoch=0 if producer_id >= 0 else -1,
                      base_sequence=0 if producer_id >= 0 else -1)
    ack = await b.store.append(BASIN, b.stream(topic, partition),
                               [AppendRecord(body=bytes(raw), timestamp=ts, span=len(pairs))])
    return ack.start.seq_num


async def offload(b) -> None:
    ch = b.store.channels["ch0"]
    while await ch.offloader.offload_once():
        pass


async def records(b, topic: str, partition: int = 0) -> list[tuple[int, bytes, bytes]]:
    """(offset, key, value) of every record, as a consumer would see them."""
    out = []
    seq = 0
    while True:
        batch = await b.store.read(BASIN, b.stream(topic, partition), seq_num=seq,
                                   clamp=True, count=50)
        if not batch.records:
            return out
        for rec in batch.records:
            if not rec.is_command():
                base = rec.seq_num - int.from_bytes(rec.body[:8], "big")
                out += [(base + r.offset, r.key and bytes(r.key),
                         r.value if r.value is None else bytes(r.value))
                        for r in iter_records(rec.body)]
        seq = batch.records[-1].end_seq


async def txn_append(b, pid: int, epoch: int, pairs) -> None:
    """A transactional batch of `pid`, registered and appended as Produce does it."""
    from broker.protocol.errors import ErrorCode
    await b.extensions["txn"].before_produce("c", 0, pid, epoch,
                                             ErrorCode.INVALID_PRODUCER_EPOCH)
    raw = build_batch([Record(i, b.now, k, v) for i, (k, v) in enumerate(pairs)],
                      producer_id=pid, producer_epoch=epoch, base_sequence=0,
                      transactional=True)
    await b.store.append(BASIN, b.stream("c", 0), [AppendRecord(
        body=bytes(raw), timestamp=b.now, span=len(pairs))])


def latest(history: list[tuple[int, bytes, bytes]]) -> list[tuple[int, bytes, bytes]]:
    last = {}
    for off, k, v in history:
        last[k] = (off, k, v)
    return sorted(last.values())


@pytest.mark.parametrize("compression", list(Compression))
async def test_the_last_record_of_each_key_stays_at_its_offset(broker, compression):
    b = broker
    await b.topics.create("c", 1, {"cleanup.policy": "compact"})
    for i in range(40):
        await produce(b, "c", [(b"k%d" % ((5 * i + j) % 7), b"v%d.%d" % (i, j))
                               for j in range(5)],
                      compression=compression)
    history = await records(b, "c")
    await offload(b)
    res = await LogCleaner(b).clean(b.topics.get("c"), 0)
    assert res is not None and res.keys == 7 and res.cleaned_upto == 200
    # the last batch holds the last record of 5 keys, the one before of the other 2
    assert (res.records_mapped, res.batches_dropped, res.batches_rewritten) == (200, 38, 1)
    assert res.bytes_after < res.bytes_before / 5
    assert await records(b, "c") == latest(history)
    assert await b.partition_bounds("c", 0) == (0, 200), "offsets and bounds stay"
    # appends go on at the next offset, and the new records are read after the gaps
    assert await produce(b, "c", [(b"k1", b"new")]) == 200
    assert (await records(b, "c"))[-1] == (200, b"k1", b"new")


async def test_tombstones_go_after_delete_retention(broker):
    b = broker
    await b.topics.create("c", 1, {"cleanup.policy": "compact",
                                   "delete.retention.ms": str(DAY)})
    await produce(b, "c", [(b"a", b"1"), (b"b", b"1"), (b"c", b"1")], ts=b.now - 2 * DAY)
    await produce(b, "c", [(b"a", None)], ts=b.now - 2 * DAY)  # old tombstone
    await produce(b, "c", [(b"b", None)])  # recent tombstone
    await produce(b, "c", [(b"x", b"2")] * 30)  # enough to close the sections above
    await offload(b)
    await LogCleaner(b).clean(b.topics.get("c"), 0)
    got = await records(b, "c")
    assert (4, b"b", None) in got, "a tombstone stays for delete.retention.ms"
    assert [r for r in got if r[1] == b"a"] == [], "then it goes, and the value it deleted"
    assert (2, b"c", b"1") in got
    cl = LogCleaner(b)
    assert await cl.clean(b.topics.get("c"), 0) is None, "nothing dirty, no tombstone due"
    b.now += 2 * DAY  # no new records: the kept tombstone alone makes a pass due
    assert await cl.clean(b.topics.get("c"), 0) is not None
    assert [r for r in await records(b, "c") if r[1] in (b"a", b"b")] == []
    assert await cl.clean(b.topics.get("c"), 0) is None, "and then nothing is due"


async def test_dirty_ratio_and_max_compaction_lag(broker):
    b = broker
    await b.topics.create("c", 1, {"cleanup.policy": "compact"})
    t = b.topics.get("c")
    cl = LogCleaner(b)
    for i in range(30):
        await produce(b, "c", [(b"k%d" % j, b"v%d" % i) for j in range(3)], ts=b.now - 120_000)
    await offload(b)
    assert (await cl.clean(t, 0)).cleaned_upto == 90
    assert json.loads((await b.store.metadata.get(checkpoint_key(t, 0))).value) == {"upto": 90}
    await b.topics.create("other", 1, {"cleanup.policy": "compact"})
    await produce(b, "other", [(b"k", b"v")] * 40)
    await offload(b)
    other = b.topics.get("other")
    assert await cl.clean(other, 0) is not None
    await b.topics.delete("other")
    assert await b.store.metadata.get(checkpoint_key(other, 0)) is None, "gone with its topic"
    assert await b.store.metadata.get(checkpoint_key(t, 0)) is not None
    # a little more: under min.cleanable.dirty.ratio (0.5) of the cleanable bytes
    await produce(b, "c", [(b"k0", b"late")], ts=b.now - 120_000)
    await offload(b)
    assert await cl.clean(t, 0) is None, "not due"
    t.configs["max.compaction.lag.ms"] = "60000"  # its records are 2 minutes old
    res = await cl.clean(t, 0)
    assert res is not None and res.cleaned_upto == 91, "overdue: cleaned whatever the ratio"
    assert [r for r in await records(b, "c") if r[1] == b"k0"] == [(90, b"k0", b"late")]


async def test_records_newer_than_min_compaction_lag_stay(broker):
    b = broker
    await b.topics.create("c", 1, {"cleanup.policy": "compact",
                                   "min.compaction.lag.ms": "60000"})
    for i in range(10):
        await produce(b, "c", [(b"k", b"old%d" % i)], ts=b.now - 120_000)
    await offload(b)
    for i in range(10):
        await produce(b, "c", [(b"k", b"new%d" % i)])
    await offload(b)
    res = await LogCleaner(b).clean(b.topics.get("c"), 0)
    assert res.cleaned_upto == 10, "the cleanable part ends where the recent records begin"
    got = await records(b, "c")
    assert got == [(9, b"k", b"old9")] + [(10 + i, b"k", b"new%d" % i) for i in range(10)]


async def test_a_small_dedupe_buffer_cleans_over_several_passes(broker):
    b = broker
    await b.topics.create("c", 1, {"cleanup.policy": "compact"})
    for i in range(4):
        for j in range(0, 40, 4):
            await produce(b, "c", [(b"key-%03d" % (j + n), b"v%d" % i) for n in range(4)])
    history = await records(b, "c")
    await offload(b)
    cl = LogCleaner(b, dedupe_buffer_bytes=1100)  # ~10 keys a pass
    t = b.topics.get("c")
    ends = [0]
    while ends[-1] < 160 and len(ends) < 50:
        ends.append((await cl.clean(t, 0, force=True)).cleaned_upto)
    assert len(ends) > 3 and ends == sorted(set(ends)) and ends[-1] == 160
    assert await records(b, "c") == latest(history)


async def test_an_idempotent_producers_last_batches_stay_whole(broker, monkeypatch):
    b = broker
    await b.topics.create("c", 1, {"cleanup.policy": "compact"})
    await produce(b, "c", [(b"a", b"1"), (b"b", b"1")], producer_id=7)
    await produce(b, "c", [(b"a", b"2"), (b"b", b"2")], producer_id=8)
    await produce(b, "c", [(b"z", b"x" * 2500)])
    await offload(b)
    await LogCleaner(b).clean(b.topics.get("c"), 0)
    got = await records(b, "c")
    assert got[:2] == [(0, b"a", b"1"), (1, b"b", b"1")], \
        "kept whole: a restarted broker rebuilds producer 7's sequence from it"
    b.producers.partitions.clear()
    b.producers._rebuilt.clear()
    st = await b.producers.state("c", 0)
    assert set(st) == {7, 8}
    monkeypatch.setattr(cleaner_mod, "_REBUILD_SEQS", 1)  # older than the rebuild window
    await produce(b, "c", [(b"a", b"3"), (b"b", b"3")])
    await produce(b, "c", [(b"z", b"x" * 2500)])
    await offload(b)
    await LogCleaner(b).clean(b.topics.get("c"), 0, force=True)
    assert await records(b, "c") == [(5, b"a", b"3"), (6, b"b", b"3"), (7, b"z", b"x" * 2500)]


async def test_a_pass_cleans_compacted_topics_only(broker):
    b = broker
    await b.topics.create("c", 2, {"cleanup.policy": "compact"})
    await b.topics.create("d", 1, {})
    await b.topics.create("cd", 1, {"cleanup.policy": "compact,delete"})
    for topic, p in (("c", 0), ("c", 1), ("d", 0), ("cd", 0)):
        for _ in range(10):
            await produce(b, topic, [(b"same", b"v" * 100)], partition=p)
    await offload(b)
    assert await LogCleaner(b).clean_pass() == 3
    assert len(await records(b, "c", 1)) == 1 and len(await records(b, "cd")) == 1
    assert len(await records(b, "d")) == 10


async def test_transactions_aborted_records_go_and_open_ones_wait(broker):
    from broker.protocol.errors import ErrorCode
    b = broker
    await b.topics.create("c", 1, {"cleanup.policy": "compact"})
    txns = b.extensions["txn"]
    pid, epoch = await txns.init_producer_id("tx", 60_000, -1, -1, ErrorCode.PRODUCER_FENCED)

    async def txn_batch(pairs):
        await txn_append(b, pid, epoch, pairs)

    await produce(b, "c", [(b"k", b"committed-1")])
    await txns.add_partitions("tx", pid, epoch, [("c", 0)], ErrorCode.PRODUCER_FENCED)
    await txn_batch([(b"k", b"aborted")])
    await txns.end_txn("tx", pid, epoch, False, ErrorCode.PRODUCER_FENCED)  # marker at 2
    # (a later batch of the producer: the aborted one is no longer its last, which a
    # restarted broker would rebuild its sequence from, and so may go)
    await txns.add_partitions("tx", pid, epoch, [("c", 0)], ErrorCode.PRODUCER_FENCED)
    await txn_batch([(b"other", b"v")])
    await txns.end_txn("tx", pid, epoch, True, ErrorCode.PRODUCER_FENCED)  # 3, marker 4
    await produce(b, "c", [(b"pad", b"x" * 3000)])
    await offload(b)
    await LogCleaner(b).clean(b.topics.get("c"), 0, force=True)
    got = await records(b, "c")
    assert (0, b"k", b"committed-1") in got, "an aborted record does not shadow its key"
    assert [r for r in got if r[2] == b"aborted"] == [], "and it is removed"
    # an open transaction: nothing from its first offset on is cleaned
    await txns.add_partitions("tx", pid, epoch, [("c", 0)], ErrorCode.PRODUCER_FENCED)
    await txn_batch([(b"k", b"open")])  # at offset 6
    await produce(b, "c", [(b"k", b"committed-2")])
    await produce(b, "c", [(b"pad", b"y" * 3000)])
    await offload(b)
    res = await LogCleaner(b).clean(b.topics.get("c"), 0, force=True)
    assert res.cleaned_upto <= 6
    got = await records(b, "c")
    assert (0, b"k", b"committed-1") in got and (6, b"k", b"open") in got


async def test_markers_go_with_the_last_record_of_their_transaction(broker):
    from broker.protocol.errors import ErrorCode
    from broker.protocol.records import parse_batch_header
    b = broker
    await b.topics.create("c", 1, {"cleanup.policy": "compact", "delete.retention.ms": "0"})
    txns = b.extensions["txn"]
    pid, epoch = await txns.init_producer_id("tx", 60_000, -1, -1, ErrorCode.PRODUCER_FENCED)
    fenced = ErrorCode.PRODUCER_FENCED

    async def txn(pairs, commit):
        await txns.add_partitions("tx", pid, epoch, [("c", 0)], fenced)
        await txn_append(b, pid, epoch, pairs)
        await txns.end_txn("tx", pid, epoch, commit, fenced)

    await txn([(b"k", b"v1")], True)      # 0, marker 1: superseded below
    await txn([(b"k", b"aborted")], False)  # 2, marker 3: aborted
    await txn([(b"k", b"v2")], True)      # 4, marker 5: stays with its record
    await txn([(b"pad", b"x" * 3000)], True)  # 6, marker 7
    await produce(b, "c", [(b"pad2", b"y" * 3000)])
    await offload(b)
    b.now += 1000  # past delete.retention.ms (0)
    await LogCleaner(b).clean(b.topics.get("c"), 0, force=True)
    seqs, markers = [], []
    seq = 0
    while True:
        batch = await b.store.read(BASIN, b.stream("c", 0), seq_num=seq, clamp=True)
        if not batch.records:
            break
        for rec in batch.records:
            (markers if parse_batch_header(rec.body).is_control else seqs).append(rec.seq_num)
        seq = batch.records[-1].end_seq
    assert markers == [5, 7], "the markers of transactions with no record left are gone"
    assert seqs == [4, 6, 8]
