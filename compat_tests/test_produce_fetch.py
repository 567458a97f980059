"""Produce and fetch with real clients (confluent-kafka, kafka-python, aiokafka, kcat):
acks, codecs, null/empty keys and values, headers, large messages, many records, LogAppendTime,
ListOffsets by time, fetch positions and limits, long polls.

Every scenario writes with one client and reads with another, and asserts exact offsets and
bytes."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as ATP
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer, \
    KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.errors import MessageSizeTooLargeError

KCAT = shutil.which("kcat")


# ------------------------------------------------------------------ client helpers


def create_topic(broker, name: str, partitions: int = 1, config: dict | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    fut = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name]
    fut.result(20)


def ck_produce(broker, topic: str, messages: list[dict], **conf) -> list:
    """Produce with confluent-kafka; returns the delivered messages (or their errors)."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, **conf})
    reports = []
    for m in messages:
        p.produce(topic, on_delivery=lambda err, msg: reports.append((err, msg)), **m)
        p.poll(0)
    assert p.flush(30) == 0
    return reports


def ck_consume(broker, topic: str, n: int, partition: int = 0, offset: int = 0,
               timeout: float = 20, **conf) -> list:
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "enable.partition.eof": False, **conf})
    c.assign([TopicPartition(topic, partition, offset)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None and m.topic() != topic:
                continue  # a consumer-level event (e.g. about group.id): not this test's
            assert m.error() is None, m.error()
            out.append(m)
    finally:
        c.close()
    assert len(out) == n, f"got {len(out)} of {n} records"
    return out


def kp_consume(broker, topic: str, n: int, partitions=(0,), offset: int = 0,
               timeout: float = 20, **conf) -> list:
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                      enable_auto_commit=False, **conf)
    tps = [KTP(topic, p) for p in partitions]
    c.assign(tps)
    for tp in tps:
        c.seek(tp, offset)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
    finally:
        c.close()
    assert len(out) == n, f"got {len(out)} of {n} records"
    return out


def aio(coro):
    return asyncio.run(coro)


async def aio_produce(broker, topic: str, messages: list[dict], **conf) -> list:
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, **conf)
    await p.start()
    try:
        futs = [await p.send(topic, **m) for m in messages]
        return [await f for f in futs]
    finally:
        await p.stop()


async def aio_consume(broker, topic: str, n: int, partition: int = 0, offset: int = 0,
                      timeout: float = 20, **conf) -> list:
    c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                         enable_auto_commit=False, **conf)
    await c.start()
    tp = ATP(topic, partition)
    c.assign([tp])
    c.seek(tp, offset)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            for recs in (await c.getmany(tp, timeout_ms=500)).values():
                out.extend(recs)
    finally:
        await c.stop()
    assert len(out) == n, f"got {len(out)} of {n} records"
    return out


def kcat(broker, *args, input: bytes | None = None) -> str:
    out = subprocess.run([KCAT, "-b", broker.bootstrap, *args], input=input, check=True,
                         timeout=60, capture_output=True)
    return out.stdout.decode()


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_round_trip_acks_confluent_to_kafka_python(broker, topic_name, acks):
    create_topic(broker, topic_name)
    reports = ck_produce(broker, topic_name,
                         [{"key": b"k%d" % i, "value": b"v%d" % i} for i in range(20)],
                         acks=acks)
    assert [err for err, _ in reports] == [None] * 20
    if acks != "0":  # acks=0 gets no offsets back (librdkafka reports -1001)
        assert [m.offset() for _, m in reports] == list(range(20))
    got = kp_consume(broker, topic_name, 20)
    assert [(r.offset, r.key, r.value) for r in got] == \
        [(i, b"k%d" % i, b"v%d" % i) for i in range(20)]


@pytest.mark.parametrize("acks", [0, 1, -1])
def test_round_trip_acks_kafka_python_to_aiokafka(broker, topic_name, acks):
    create_topic(broker, topic_name)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=acks if acks >= 0 else "all")
    futs = [p.send(topic_name, key=b"k%d" % i, value=b"v%d" % i, partition=0)
            for i in range(20)]
    metas = [f.get(timeout=20) for f in futs]
    p.close()
    if acks != 0:
        assert [m.offset for m in metas] == list(range(20))
    got = aio(aio_consume(broker, topic_name, 20))
    assert [(r.offset, r.key, r.value) for r in got] == \
        [(i, b"k%d" % i, b"v%d" % i) for i in range(20)]


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_round_trip_acks_aiokafka_to_confluent(broker, topic_name, acks):
    create_topic(broker, topic_name)
    metas = aio(aio_produce(broker, topic_name,
                            [{"key": b"k%d" % i, "value": b"v%d" % i, "partition": 0}
                             for i in range(20)], acks=acks))
    if acks != 0:
        assert [m.offset for m in metas] == list(range(20))
    got = ck_consume(broker, topic_name, 20)
    assert [(m.offset(), m.key(), m.value()) for m in got] == \
        [(i, b"k%d" % i, b"v%d" % i) for i in range(20)]


# ------------------------------------------------------------------ codecs

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
def test_codec_confluent_to_aiokafka(broker, topic_name, codec):
    create_topic(broker, topic_name)
    values = [(b"value-%d " % i) * 20 for i in range(50)]
    reports = ck_produce(broker, topic_name, [{"value": v} for v in values],
                         **{"compression.type": codec, "linger.ms": 50})
    assert [m.offset() for _, m in reports] == list(range(50))
    got = aio(aio_consume(broker, topic_name, 50))
    assert [(r.offset, r.value) for r in got] == list(enumerate(values))


@pytest.mark.parametrize("codec", CODECS)
def test_codec_aiokafka_to_confluent(broker, topic_name, codec):
    create_topic(broker, topic_name)
    values = [(b"value-%d " % i) * 20 for i in range(50)]
    metas = aio(aio_produce(broker, topic_name, [{"value": v, "partition": 0} for v in values],
                            compression_type=None if codec == "none" else codec, linger_ms=50))
    assert [m.offset for m in metas] == list(range(50))
    got = ck_consume(broker, topic_name, 50)
    assert [(m.offset(), m.value()) for m in got] == list(enumerate(values))


def test_mixed_codecs_in_one_partition(broker, topic_name):
    create_topic(broker, topic_name)
    expected = []
    for codec in CODECS:  # one confluent producer per codec, one batch each
        values = [b"%s-%d" % (codec.encode(), i) * 10 for i in range(7)]
        reports = ck_produce(broker, topic_name, [{"value": v} for v in values],
                             **{"compression.type": codec, "linger.ms": 100})
        assert [m.offset() for _, m in reports] == \
            list(range(len(expected), len(expected) + 7))
        expected += values
    for codec in ("gzip", "zstd"):  # and kafka-python batches (no snappy/lz4 module here)
        values = [b"kp-%s-%d" % (codec.encode(), i) for i in range(3)]
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec,
                          linger_ms=50)
        metas = [f.get(20) for f in [p.send(topic_name, value=v, partition=0)
                                     for v in values]]
        p.close()
        assert [m.offset for m in metas] == list(range(len(expected), len(expected) + 3))
        expected += values
    n = len(expected)
    assert [m.value() for m in ck_consume(broker, topic_name, n)] == expected
    assert [r.value for r in aio(aio_consume(broker, topic_name, n))] == expected
    if KCAT:
        out = kcat(broker, "-C", "-t", topic_name, "-e", "-f", "%o %s\\n")
        assert out.splitlines() == [f"{i} {v.decode()}" for i, v in enumerate(expected)]


# ------------------------------------------------------------------ keys, values, headers


def test_null_and_empty_keys_and_values(broker, topic_name):
    create_topic(broker, topic_name)
    combos = [(None, None), (b"", b""), (None, b""), (b"", None), (b"k", None), (None, b"v")]
    reports = ck_produce(broker, topic_name, [{"key": k, "value": v} for k, v in combos])
    assert [m.offset() for _, m in reports] == list(range(len(combos)))
    assert [(r.key, r.value) for r in kp_consume(broker, topic_name, len(combos))] == combos
    assert [(r.key, r.value) for r in aio(aio_consume(broker, topic_name, len(combos)))] == \
        combos
    assert [(m.key(), m.value()) for m in ck_consume(broker, topic_name, len(combos))] == combos


def test_headers_duplicates_nulls_unicode(broker, topic_name):
    create_topic(broker, topic_name)
    headers = [("dup", b"1"), ("dup", b"2"), ("null", None), ("ünï-ω", "värde ✓".encode()),
               ("empty", b"")]
    ck_produce(broker, topic_name, [{"value": b"with", "headers": headers},
                                    {"value": b"without"}])
    kp = kp_consume(broker, topic_name, 2)
    assert [list(r.headers) for r in kp] == [headers, []]
    aiok = aio(aio_consume(broker, topic_name, 2))
    assert [list(r.headers) for r in aiok] == [headers, []]
    # and the other way round: aiokafka writes, confluent reads
    aio(aio_produce(broker, topic_name, [{"value": b"again", "headers": headers,
                                          "partition": 0}]))
    (m,) = ck_consume(broker, topic_name, 1, offset=2)
    assert m.headers() == headers


# ------------------------------------------------------------------ sizes


def test_one_megabyte_messages(broker, topic_name):
    create_topic(broker, topic_name)
    big = [bytes([i]) * 1_000_000 for i in range(3)]
    reports = ck_produce(broker, topic_name, [{"value": v} for v in big],
                         **{"message.max.bytes": 2_000_000, "linger.ms": 0})
    assert [(err, m.offset()) for err, m in reports] == [(None, 0), (None, 1), (None, 2)]
    got = kp_consume(broker, topic_name, 3)
    assert [(r.offset, r.value) for r in got] == list(enumerate(big))
    got = aio(aio_consume(broker, topic_name, 3, max_partition_fetch_bytes=100_000))
    assert [r.value for r in got] == big


def test_message_too_large_over_topic_limit(broker, topic_name):
    create_topic(broker, topic_name, config={"max.message.bytes": "10000"})
    (bad,) = ck_produce(broker, topic_name, [{"value": b"x" * 20_000}])
    assert bad[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    ((err, ok),) = ck_produce(broker, topic_name, [{"value": b"ok"}])
    assert err is None and ok.offset() == 0
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=5_000_000)
    with pytest.raises(MessageSizeTooLargeError):
        p.send(topic_name, value=b"y" * 50_000, partition=0).get(20)
    p.close()  # kafka-python treats the error as fatal for this producer
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    assert p.send(topic_name, value=b"fits", partition=0).get(20).offset == 1
    p.close()
    assert [r.value for r in kp_consume(broker, topic_name, 2)] == [b"ok", b"fits"]


def test_ten_thousand_records_over_many_partitions(broker, topic_name):
    partitions = 8
    create_topic(broker, topic_name, partitions)
    n = 10_000
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                  "batch.num.messages": 500})
    delivered = []
    for i in range(n):
        p.produce(topic_name, value=b"%d" % i, partition=i % partitions,
                  on_delivery=lambda err, m: delivered.append((err, m.partition(), m.offset())))
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert all(err is None for err, _, _ in delivered)
    for part in range(partitions):
        offs = sorted(o for _, pp, o in delivered if pp == part)
        assert offs == list(range(n // partitions))
    got = kp_consume(broker, topic_name, n, partitions=range(partitions), timeout=60)
    by_part: dict[int, list] = {}
    for r in got:
        by_part.setdefault(r.partition, []).append(r)
    for part, recs in by_part.items():
        assert [r.offset for r in recs] == list(range(n // partitions))
        assert [int(r.value) for r in recs] == list(range(part, n, partitions))
    assert sorted(int(r.value) for r in got) == list(range(n))


# ------------------------------------------------------------------ timestamps


def test_log_append_time_topic(broker, topic_name):
    create_topic(broker, topic_name, config={"message.timestamp.type": "LogAppendTime"})
    old = 1_000_000_000_000  # 2001: the producer's CreateTime, which the broker replaces
    before = int(time.time() * 1000)
    ck_produce(broker, topic_name, [{"value": b"a", "timestamp": old},
                                    {"value": b"b", "timestamp": old}])
    aio(aio_produce(broker, topic_name, [{"value": b"c", "timestamp_ms": old, "partition": 0}]))
    after = int(time.time() * 1000)
    for m in ck_consume(broker, topic_name, 3):
        kind, ts = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME and before - 5 <= ts <= after + 5
    for r in kp_consume(broker, topic_name, 3):
        assert r.timestamp_type == 1 and before - 5 <= r.timestamp <= after + 5


def test_create_time_is_kept(broker, topic_name):
    create_topic(broker, topic_name)
    ts = int(time.time() * 1000) - 86_400_000  # a day ago: within retention.ms
    ck_produce(broker, topic_name, [{"value": b"a", "timestamp": ts}])
    (m,) = ck_consume(broker, topic_name, 1)
    assert m.timestamp() == (TIMESTAMP_CREATE_TIME, ts)
    (r,) = kp_consume(broker, topic_name, 1)
    assert (r.timestamp_type, r.timestamp) == (0, ts)


def test_records_with_old_create_time_stay_readable(broker, topic_name):
    create_topic(broker, topic_name)
    ck_produce(broker, topic_name, [{"value": b"2001", "timestamp": 1_000_000_000_000}])
    (r,) = kp_consume(broker, topic_name, 1, timeout=2)
    assert (r.offset, r.value, r.timestamp) == (0, b"2001", 1_000_000_000_000)


def test_list_offsets_by_time(broker, topic_name):
    create_topic(broker, topic_name)
    base = int(time.time() * 1000) - 3_600_000  # an hour ago: within retention.ms
    ck_produce(broker, topic_name,
               [{"value": b"%d" % i, "timestamp": base + 1000 * i} for i in range(10)],
               **{"linger.ms": 0, "max.in.flight": 1})
    queries = {base - 5000: 0, base: 0, base + 4500: 5, base + 5000: 5, base + 9000: 9,
               base + 9001: None, base + 10**9: None}
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compat-unused"})
    got = {}
    for ts in queries:
        (tp,) = c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=20)
        assert tp.error is None
        got[ts] = None if tp.offset < 0 else tp.offset
    c.close()
    assert got == queries
    k = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    tp = KTP(topic_name, 0)
    for ts, want in queries.items():
        res = k.offsets_for_times({tp: ts})[tp]
        assert (None if res is None else (res.offset, res.timestamp)) == \
            (None if want is None else (want, base + 1000 * want))
    assert k.beginning_offsets([tp]) == {tp: 0}
    assert k.end_offsets([tp]) == {tp: 10}
    k.close()


# ------------------------------------------------------------------ fetch positions and limits


def test_fetch_from_the_middle_of_a_batch(broker, topic_name):
    create_topic(broker, topic_name)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
    metas = [f.get(20) for f in [p.send(topic_name, value=b"%d" % i, partition=0)
                                 for i in range(10)]]
    p.close()
    assert [m.offset for m in metas] == list(range(10))
    got = ck_consume(broker, topic_name, 5, offset=5)
    assert [(m.offset(), m.value()) for m in got] == [(i, b"%d" % i) for i in range(5, 10)]
    got = aio(aio_consume(broker, topic_name, 3, offset=7))
    assert [(r.offset, r.value) for r in got] == [(i, b"%d" % i) for i in range(7, 10)]


def test_tiny_fetch_limits_still_return_whole_batches(broker, topic_name):
    create_topic(broker, topic_name)
    values = [b"%04d" % i * 100 for i in range(30)]  # one ~12 KB batch
    reports = ck_produce(broker, topic_name, [{"value": v} for v in values],
                         **{"linger.ms": 200})
    assert [m.offset() for _, m in reports] == list(range(30))
    got = kp_consume(broker, topic_name, 30, fetch_max_bytes=100,
                     max_partition_fetch_bytes=100)
    assert [r.value for r in got] == values
    got = ck_consume(broker, topic_name, 30, **{"fetch.max.bytes": 1000,
                                                "message.max.bytes": 1000,
                                                "max.partition.fetch.bytes": 100,
                                                "receive.message.max.bytes": 100_000})
    assert [m.value() for m in got] == values
    got = aio(aio_consume(broker, topic_name, 30, fetch_max_bytes=100,
                          max_partition_fetch_bytes=100))
    assert [r.value for r in got] == values


# ------------------------------------------------------------------ long polls


def test_consumer_waiting_on_empty_partition_gets_a_later_record_promptly(broker, topic_name):
    create_topic(broker, topic_name)
    got = {}

    def consume():
        msgs = ck_consume(broker, topic_name, 1, timeout=20, **{"fetch.wait.max.ms": 5000})
        got["at"] = time.monotonic()
        got["value"] = msgs[0].value()

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(2)  # the consumer is parked in a long poll by now
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    p.send(topic_name, value=b"late", partition=0).get(20)
    acked = time.monotonic()
    p.close()
    t.join(30)
    assert got["value"] == b"late"
    # the fetch was answered when the record arrived, not when fetch.wait.max.ms ran out
    assert got["at"] - acked < 1.0, got["at"] - acked


def test_kafka_python_long_poll_wakes_on_confluent_produce(broker, topic_name):
    create_topic(broker, topic_name)
    got = {}

    def consume():
        recs = kp_consume(broker, topic_name, 1, timeout=20, fetch_max_wait_ms=5000)
        got["at"] = time.monotonic()
        got["value"] = recs[0].value

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(2)
    ck_produce(broker, topic_name, [{"value": b"late"}], **{"linger.ms": 0})
    acked = time.monotonic()
    t.join(30)
    assert got["value"] == b"late"
    assert got["at"] - acked < 1.0, got["at"] - acked


def test_fetch_wait_max_ms_is_respected(broker, topic_name):
    """A fetch that cannot reach min_bytes is answered when max_wait_ms runs out, not
    before and not much later; max_wait_ms=0 is answered at once."""
    from test_bad_input import FETCH, Wire
    from test_bad_input import create_topic as wire_create_topic

    from broker.protocol.messages.fetch_request import FetchPartition, FetchRequest, FetchTopic
    w = Wire(broker.bootstrap)
    try:
        wire_create_topic(w, topic_name)

        def timed_fetch(max_wait_ms: int) -> float:
            start = time.monotonic()
            resp = w.call(FETCH, 12, FetchRequest(
                replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=1 << 20,
                isolation_level=0, session_id=0, session_epoch=-1, topics=[FetchTopic(
                    topic=topic_name, partitions=[FetchPartition(
                        partition=0, current_leader_epoch=-1, fetch_offset=0,
                        log_start_offset=-1, partition_max_bytes=1 << 20)])],
                forgotten_topics_data=[], rack_id=""))
            (p,) = resp.responses[0].partitions
            assert (p.error_code, p.high_watermark, len(p.records or b"")) == (0, 0, 0)
            return time.monotonic() - start

        assert timed_fetch(0) < 0.5
        assert 0.55 <= timed_fetch(600) < 1.5
        assert 1.15 <= timed_fetch(1200) < 2.1
    finally:
        w.close()


@pytest.mark.skipif(KCAT is None, reason="kcat is installed by .ci/run")
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kcat_compressed_produce_to_kafka_python_and_aiokafka(broker, topic_name, codec):
    create_topic(broker, topic_name)
    lines = [f"key{i}:value {i} " + "x" * 50 for i in range(40)]
    kcat(broker, "-P", "-t", topic_name, "-p", "0", "-K:", "-z", codec,
         "-X", "linger.ms=100", input=("\n".join(lines) + "\n").encode())
    expected = [(i, f"key{i}".encode(), f"value {i} ".encode() + b"x" * 50)
                for i in range(40)]
    got = aio(aio_consume(broker, topic_name, 40))
    assert [(r.offset, r.key, r.value) for r in got] == expected
    if codec in ("gzip", "zstd"):  # kafka-python here has no snappy or lz4 module
        got = kp_consume(broker, topic_name, 40)
        assert [(r.offset, r.key, r.value) for r in got] == expected
