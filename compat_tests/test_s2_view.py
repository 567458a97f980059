"""Kafka topics through the S2 API: produced with confluent-kafka, read with the official
s2-sdk (unary and a following session) and with curl-style SSE; S2 writes are refused."""
import asyncio
import json
from datetime import timedelta

import httpx
from confluent_kafka import Producer
from s2_sdk import S2, Endpoints, Retry, S2ServerError, SeqNum, Timeout

BASIN = "default-basin"


def sdk(broker) -> S2:
    url = f"http://{broker.http}"
    return S2("token", endpoints=Endpoints(account=url, basin=url),
              retry=Retry(max_attempts=1), timeout=Timeout(request=timedelta(seconds=10)))


def produce(broker, topic, items):
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 20,
                  "compression.type": "lz4"})
    for key, value, headers in items:
        p.produce(topic, key=key, value=value, headers=headers)
    assert p.flush(20) == 0


def test_sdk_reads_a_kafka_topic(broker, topic_name):
    items = [(b"k%d" % i, b"v%d" % i, [("h", b"x"), ("n", None)]) for i in range(5)]
    items.append((None, None, []))
    produce(broker, topic_name, items)

    async def main():
        async with sdk(broker) as s2:
            stream = s2.basin(BASIN).stream(f"kafka/{topic_name}/0")
            batch = await stream.read(start=SeqNum(2))
            got = [(r.seq_num, r.body, r.headers) for r in batch.records]
            assert got[0] == (2, b"v2", [(b"kafka.key", b"k2"), (b"h", b"x"), (b"n", b"")])
            assert [g[0] for g in got] == [2, 3, 4, 5]
            assert got[-1] == (5, b"", [])
            assert (await stream.check_tail()).seq_num == 6
            follow = stream.read_session(start=SeqNum(4))  # unbounded: follows the tail
            seen = []

            async def consume():
                async for b in follow:
                    seen.extend(r.body for r in b.records)
                    if len(seen) >= 4:
                        return

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.5)
            produce(broker, topic_name, [(None, b"late-1", []), (None, b"late-2", [])])
            await asyncio.wait_for(task, 20)
            assert seen == [b"v4", b"", b"late-1", b"late-2"]
            try:
                from s2_sdk import AppendInput, Record
                await stream.append(AppendInput(records=[Record(body=b"no")]))
            except S2ServerError as e:
                assert "kafka" in str(e).lower()
            else:
                raise AssertionError("an S2 append to a Kafka partition must be refused")

    asyncio.run(main())


def test_sse_reads_a_kafka_topic(broker, topic_name):
    produce(broker, topic_name, [(b"a", b"alpha", []), (b"b", b"beta", [])])
    url = f"http://{broker.http}/v1/streams/kafka%2F{topic_name}%2F0/records"
    with httpx.Client(headers={"s2-basin": BASIN, "authorization": "Bearer t"}) as c:
        r = c.get(url, params={"seq_num": 0, "count": 2},
                  headers={"accept": "text/event-stream"}, timeout=20)
        events = [json.loads(line[5:]) for line in r.text.splitlines()
                  if line.startswith("data:") and line[5:].strip().startswith("{")]
        bodies = [rec["body"] for e in events for rec in e.get("records", [])]
        assert bodies == ["alpha", "beta"]


def test_internal_streams_refuse_s2_writes(broker):
    url = f"http://{broker.http}/v1/streams/kafka-internal%2Foffsets%2F0/records"
    with httpx.Client(headers={"s2-basin": BASIN, "authorization": "Bearer t"}) as c:
        r = c.post(url, json={"records": [{"body": "forged"}]}, timeout=10)
        assert r.status_code == 409 and r.json()["code"] == "kafka_partition"
