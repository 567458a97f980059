"""Client quotas with real clients on a real broker process: quotas set and described over
the wire (no installed client has AlterClientQuotas / DescribeClientQuotas, so those go
through the repo's codec), then enforced on confluent-kafka (librdkafka) producers and
consumers, which report the broker's throttle through `throttle_cb`; an old produce
version whose response is held back; the IP connection rate; and the quotas surviving a
restart. The broker measures over 2 windows of 1 s (so a throttle is at most 2 s)."""
from __future__ import annotations

import shutil
import socket
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from test_bad_input import PRODUCE, Wire, batch_of, create_topic, produce_request

from brokerproc import start_broker
from broker.protocol.messages.alter_client_quotas_request import (
    AlterClientQuotasRequest,
    EntityData,
    EntryData,
    OpData,
)
from broker.protocol.messages.describe_client_quotas_request import (
    ComponentData,
    DescribeClientQuotasRequest,
)

ALTER, DESCRIBE = 49, 48
RATE = 256 * 1024  # bytes/s
VALUE = b"q" * 1024
COUNT = 1536        # 1.5 MiB of values


@pytest.fixture(scope="module")
def qbroker():
    d = tempfile.mkdtemp(prefix="s2kafka-quotas-")
    holder = [start_broker(d, extra=["--set", "kafka.quota_window_num=2",
                                     "--set", "kafka.quota_window_size_s=1.0"])]
    yield holder
    rc = holder[0].stop()
    shutil.rmtree(d, ignore_errors=True)
    assert rc == 0


def alter(w: Wire, entity: list[tuple[str, str | None]], ops: list[tuple[str, float | None]],
          validate_only: bool = False) -> list[tuple[int, str | None]]:
    resp = w.call(ALTER, 1, AlterClientQuotasRequest(entries=[EntryData(
        entity=[EntityData(entity_type=t, entity_name=n) for t, n in entity],
        ops=[OpData(key=k, value=v or 0.0, remove=v is None) for k, v in ops])],
        validate_only=validate_only))
    return [(e.error_code, e.error_message) for e in resp.entries]


def describe(w: Wire, components: list[tuple[str, int, str | None]], strict=False):
    resp = w.call(DESCRIBE, 1, DescribeClientQuotasRequest(components=[
        ComponentData(entity_type=t, match_type=m, match=n) for t, m, n in components],
        strict=strict))
    assert resp.error_code == 0, resp.error_message
    return {tuple((e.entity_type, e.entity_name) for e in x.entity):
            {v.key: v.value for v in x.values} for x in resp.entries}


def produce_all(bootstrap: str, topic: str, client_id: str) -> tuple[float, list[int]]:
    throttles: list[int] = []
    # small batches: many requests, so that the throttle of the first ones holds back
    # the rest (a whole 1.5 MiB in two requests would be done before any throttle)
    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 1,
                  "batch.size": 16384, "throttle_cb": lambda ev: throttles.append(ev.throttle_time)})
    acked = []
    t0 = time.monotonic()
    for _ in range(COUNT):
        while True:
            try:
                p.produce(topic, VALUE, on_delivery=lambda err, m: acked.append(err))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    elapsed = time.monotonic() - t0
    assert len(acked) == COUNT and not any(acked)
    return elapsed, throttles


def consume_all(bootstrap: str, topic: str, client_id: str) -> tuple[float, list[int], int]:
    throttles: list[int] = []
    c = Consumer({"bootstrap.servers": bootstrap, "client.id": client_id,
                  "group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 262144, "message.max.bytes": 262144,
                  "max.partition.fetch.bytes": 65536,
                  "throttle_cb": lambda ev: throttles.append(ev.throttle_time)})
    c.subscribe([topic])
    got = 0
    t0 = time.monotonic()
    deadline = t0 + 60
    while got < COUNT and time.monotonic() < deadline:
        for m in c.consume(500, 1.0):
            assert m.error() is None
            got += 1
    elapsed = time.monotonic() - t0
    c.close()
    return elapsed, throttles, got


def test_quotas_are_set_described_and_validated(qbroker):
    w = Wire(qbroker[0].bootstrap)
    try:
        assert alter(w, [("client-id", "c-desc")], [("producer_byte_rate", 1000.0)]) == \
            [(0, None)]
        assert alter(w, [("user", None)], [("request_percentage", 50.0)]) == [(0, None)]
        assert alter(w, [("user", "u1")], [("consumer_byte_rate", 5.0)], True) == [(0, None)]
        [(code, msg)] = alter(w, [("user", "u1")], [("consumer_byte_rate", 1.5)])
        assert code == 42 and "Long" in msg
        [(code, msg)] = alter(w, [("ip", "1.2.3.4"), ("user", "u1")],
                              [("connection_creation_rate", 1.0)])
        assert code == 42
        found = describe(w, [("client-id", 0, "c-desc")])
        assert found == {(("client-id", "c-desc"),): {"producer_byte_rate": 1000.0}}
        assert (("user", None),) in describe(w, [("user", 1, None)])
        assert (("user", "u1"),) not in describe(w, [])  # (validate_only)
        assert alter(w, [("user", None)], [("request_percentage", None)]) == [(0, None)]
        assert (("user", None),) not in describe(w, [])
    finally:
        w.close()


def test_produce_and_fetch_byte_rates_throttle_librdkafka(qbroker):
    b = qbroker[0]
    topic = f"quota-{uuid.uuid4().hex[:8]}"
    other = f"quota-slow-{uuid.uuid4().hex[:8]}"
    w = Wire(b.bootstrap)
    try:
        create_topic(w, topic)
        create_topic(w, other)
        assert alter(w, [("client-id", "slow-producer")],
                     [("producer_byte_rate", float(RATE))]) == [(0, None)]
        assert alter(w, [("client-id", "slow-consumer")],
                     [("consumer_byte_rate", float(RATE))]) == [(0, None)]
    finally:
        w.close()
    fast, fast_throttles = produce_all(b.bootstrap, topic, "fast-producer")
    slow, slow_throttles = produce_all(b.bootstrap, other, "slow-producer")
    # 1.5 MiB at 256 KiB/s, measured over at least 1 s: at least ~4 s whatever the burst
    assert slow >= 3.0 and slow > 2 * fast, (slow, fast)
    assert slow_throttles and max(slow_throttles) > 0 and not any(fast_throttles)
    # each topic holds its COUNT records, read at the consumer's quota or at full speed
    elapsed, throttles, got = consume_all(b.bootstrap, topic, "slow-consumer")
    assert got == COUNT
    assert elapsed >= 3.0 and throttles and max(throttles) > 0, (elapsed, throttles)
    elapsed_fast, fast_c, got = consume_all(b.bootstrap, topic, "fast-consumer")
    assert got == COUNT and not any(fast_c) and elapsed_fast < elapsed
    assert consume_all(b.bootstrap, other, "fast-consumer")[2] == COUNT


def test_old_produce_version_response_is_held_back(qbroker):
    """Produce v3-5 clients do not back off by themselves (KIP-219 came with v6): the
    broker holds the response for the throttle time instead."""
    b = qbroker[0]
    topic = f"quota-old-{uuid.uuid4().hex[:8]}"
    w = Wire(b.bootstrap)  # client id "compat-wire"
    try:
        create_topic(w, topic)
        assert alter(w, [("client-id", "compat-wire")],
                     [("producer_byte_rate", 100_000.0)]) == [(0, None)]
        batch = batch_of([b"x" * 100_000 for _ in range(4)])  # 400 KB: 4x the quota
        t0 = time.monotonic()
        resp = w.call(PRODUCE, 5, produce_request(topic, batch))
        held = time.monotonic() - t0
        p = resp.responses[0].partition_responses[0]
        assert p.error_code == 0 and p.base_offset == 0
        assert resp.throttle_time_ms > 0 and held >= resp.throttle_time_ms / 1000 * 0.9
        assert alter(w, [("client-id", "compat-wire")], [("producer_byte_rate", None)]) == \
            [(0, None)]
    finally:
        w.close()


def test_connection_creation_rate_per_ip(qbroker):
    b = qbroker[0]
    w = Wire(b.bootstrap)
    try:
        assert alter(w, [("ip", "127.0.0.1")], [("connection_creation_rate", 2.0)]) == \
            [(0, None)]
        host, port = b.bootstrap.rsplit(":", 1)
        socks = [socket.create_connection((host, int(port))) for _ in range(8)]
        closed = 0
        for s in socks:
            s.settimeout(5)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (TimeoutError, socket.timeout):
                pass
            except ConnectionResetError:
                closed += 1
            s.close()
        assert closed >= 4, closed  # 2/s over 2 x 1 s: the burst passes, the rest not
        time.sleep(2.5)
        assert alter(w, [("ip", "127.0.0.1")], [("connection_creation_rate", None)]) == \
            [(0, None)]
    finally:
        w.close()
    w = Wire(b.bootstrap)  # the rate is gone: connections are served again
    try:
        assert describe(w, [("ip", 2, None)]) == {}
    finally:
        w.close()


def test_quotas_survive_a_restart(qbroker):
    b = qbroker[0]
    w = Wire(b.bootstrap)
    try:
        assert alter(w, [("user", "keeper"), ("client-id", None)],
                     [("consumer_byte_rate", 4096.0)]) == [(0, None)]
    finally:
        w.close()
    qbroker[0] = b.restart()
    w = Wire(qbroker[0].bootstrap)
    try:
        assert describe(w, [("user", 0, "keeper")]) == {
            (("client-id", None), ("user", "keeper")): {"consumer_byte_rate": 4096.0}}
    finally:
        w.close()
