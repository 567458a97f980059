"""The S2 HTTP API of a cluster of two broker processes (docs/decisions/0016, relay in
s2core/http/relay.py): a stream lives on the WAL of the broker it was created through,
and the other broker passes requests for its records on to that one, so the official
s2-sdk (unary appends and reads, append and read sessions over HTTP/2) and plain HTTP
(JSON, SSE) work through either broker alike."""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from brokerproc import start_broker
from s2_sdk import S2, AppendInput, Endpoints, ReadLimit, Record, Retry, SeqNum, Timeout
from test_cluster import flags
from test_security import pki  # noqa: F401 (a fixture: a CA and a certificate for 127.0.0.1)


def sdk(url: str) -> S2:
    return S2("token", endpoints=Endpoints(account=url, basin=url),
              retry=Retry(max_attempts=1), timeout=Timeout(request=timedelta(seconds=10)))


@pytest.fixture
def pair(tmp_path):
    os.makedirs(tmp_path / "shared")
    brokers = [start_broker(str(tmp_path / f"b{i}"), extra=flags(str(tmp_path), i))
               for i in range(2)]
    time.sleep(1.0)  # (each has seen the other's row: addresses, channel)
    yield [f"http://{b.http}" for b in brokers], brokers
    for b in brokers:
        assert b.stop() in (0, -9), b.log()[-3000:]


async def test_either_broker_serves_every_streams_records(pair):
    (a, b), procs = pair
    basin = f"cl-{uuid.uuid4().hex[:8]}"
    async with sdk(a) as s2a, sdk(b) as s2b:
        await s2a.create_basin(basin)
        await s2a.basin(basin).create_stream("on-a")
        await s2b.basin(basin).create_stream("on-b")
        for client, name in ((s2b, "on-a"), (s2a, "on-b")):  # each through the other broker
            stream = client.basin(basin).stream(name)
            ack = await stream.append(AppendInput(records=[Record(body=b"u0"),
                                                           Record(body=b"u1")]))
            assert (ack.start.seq_num, ack.end.seq_num) == (0, 2)
            async with stream.append_session() as session:
                tickets = [await session.submit(AppendInput(records=[Record(body=b"s%d" % i)]))
                           for i in range(20)]
                acks = [await t for t in tickets]
            assert [x.start.seq_num for x in acks] == list(range(2, 22))
            batch = await stream.read(start=SeqNum(0))
            assert [r.body for r in batch.records][:3] == [b"u0", b"u1", b"s0"]
            got = [r.body async for rb in stream.read_session(start=SeqNum(0),
                                                              limit=ReadLimit(count=22))
                   for r in rb.records]
            assert got == [b"u0", b"u1"] + [b"s%d" % i for i in range(20)]
            assert (await stream.check_tail()).seq_num == 22
    async with httpx.AsyncClient(base_url=b, headers={"s2-basin": basin}) as http:
        r = await http.post("/v1/streams/on-a/records",
                            json={"records": [{"body": "j0"}, {"body": "j1"}]})
        assert r.status_code == 200 and r.json()["start"]["seq_num"] == 22, r.text
        r = await http.get("/v1/streams/on-a/records", params={"seq_num": 22, "count": 2},
                           headers={"accept": "text/event-stream"})
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        bodies = [rec["body"] for block in r.text.strip().split("\n\n")
                  if "event: batch" in block
                  for rec in json.loads(block.split("data: ", 1)[1])["records"]]
        assert bodies == ["j0", "j1"]
        r = await http.get("/v1/streams/nope/records", params={"seq_num": 0})
        assert r.status_code == 404
    async with httpx.AsyncClient(base_url=a, headers={"s2-basin": basin}) as http:
        # changes to a stream go to its broker too (through broker 0 to broker 1's)
        r = await http.patch("/v1/streams/on-b", json={"retention_policy": {"age": 3600}})
        assert r.status_code == 200, r.text
        r = await http.delete("/v1/streams/on-b")
        assert r.status_code in (200, 202), r.text
    async with httpx.AsyncClient(base_url=b, headers={"s2-basin": basin}) as http:
        r = await http.post("/v1/streams/on-b/records", json={"records": [{"body": "x"}]})
        assert r.status_code in (404, 409), r.text
        # broker 0 killed: its streams answer 503 until broker 1 takes its WAL over
        procs[0].kill()
        deadline = time.monotonic() + 20
        while True:
            r = await http.get("/v1/streams/on-a/records/tail")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.status_code == 503, r.text
            await asyncio.sleep(0.2)
        assert r.json()["tail"]["seq_num"] == 24, r.text


def _answered(text: str) -> float:
    """How many GET record requests a server has answered (its /metrics)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("s2_http_requests_total{") and 'method="GET"' in line
               and 'route="/v1/streams/*/records"' in line)


async def test_a_follow_session_relayed_ends_when_its_client_leaves(pair):
    (a, b), _ = pair
    basin = f"cl-{uuid.uuid4().hex[:8]}"
    async with sdk(a) as s2a:
        await s2a.create_basin(basin)
        await s2a.basin(basin).create_stream("live")
        await s2a.basin(basin).stream("live").append(AppendInput(records=[Record(body=b"r")]))
    async with httpx.AsyncClient(base_url=a) as owner:
        before = _answered((await owner.get("/metrics")).text)
        async with httpx.AsyncClient(base_url=b, headers={"s2-basin": basin}) as http:
            async with http.stream("GET", "/v1/streams/live/records", params={"seq_num": 0},
                                   headers={"accept": "text/event-stream"}) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_text():
                    if "event: batch" in chunk:
                        break  # (the session follows on: the client leaves it)
        deadline = time.monotonic() + 10
        while _answered((await owner.get("/metrics")).text) < before + 1:
            assert time.monotonic() < deadline, "the owner's session went on"
            await asyncio.sleep(0.1)


def test_requests_are_relayed_over_tls_too(tmp_path, pki):  # noqa: F811
    """With TLS on the S2 API, a broker relays to another over https, checking its
    certificate against `server.cluster_tls_ca_file`."""
    os.makedirs(tmp_path / "shared")
    tls = ["--set", f"server.http_tls_cert_file={pki['server']}",
           "--set", f"server.http_tls_key_file={pki['server_key']}",
           "--set", f"server.cluster_tls_ca_file={pki['ca']}"]
    brokers = [start_broker(str(tmp_path / f"b{i}"), extra=flags(str(tmp_path), i) + tls)
               for i in range(2)]
    try:
        time.sleep(1.0)
        a, b = (f"https://{x.http}" for x in brokers)
        basin = f"cl-{uuid.uuid4().hex[:8]}"
        with httpx.Client(verify=pki["ca"]) as http:
            assert http.post(f"{a}/v1/basins", json={"basin": basin}).status_code in (200, 201)
            h = {"s2-basin": basin}
            assert http.post(f"{a}/v1/streams", json={"stream": "on-a"},
                             headers=h).status_code in (200, 201)
            r = http.post(f"{b}/v1/streams/on-a/records", headers=h,
                          json={"records": [{"body": "t0"}, {"body": "t1"}]})
            assert r.status_code == 200, r.text
            r = http.get(f"{b}/v1/streams/on-a/records", headers=h, params={"seq_num": 0})
            assert [x["body"] for x in r.json()["records"]] == ["t0", "t1"], r.text
    finally:
        for x in brokers:
            assert x.stop() == 0, x.log()[-3000:]
