"""The API at the HTTP level: JSON (raw and base64), SSE sessions, curl, health, metrics."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil

import httpx
import pytest

BASIN = "test-basin"
H = {"s2-basin": BASIN}


@pytest.fixture
async def http(server):
    async with httpx.AsyncClient(base_url=server.url, headers=H, timeout=10) as client:
        r = await client.post("/v1/streams", json={"stream": "s"})
        assert r.status_code == 201, r.text
        yield client


async def test_health_and_metrics(http):
    r = await http.get("/health")
    assert r.status_code == 200 and r.text == "ok\n"
    await http.post("/v1/streams/s/records", json={"records": [{"body": "a"}, {"body": "bc"}]})
    r = await http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 's2_http_requests_total{method="POST",route="/v1/streams/*/records",status="200"} ' \
           '1.0' in text
    assert "s2_appended_records_total 2.0" in text
    assert "s2_appended_bytes_total 19.0" in text  # (8 + 1) + (8 + 2)
    assert "s2_http_request_duration_seconds_bucket" in text


async def test_json_raw_roundtrip(http):
    r = await http.post("/v1/streams/s/records", json={
        "records": [{"body": "héllo", "headers": [["k", "v"]]}, {"timestamp": 5}]})
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["start"]["seq_num"] == 0 and ack["end"]["seq_num"] == 2
    assert ack["tail"]["seq_num"] == 2
    r = await http.get("/v1/streams/s/records", params={"seq_num": 0})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    batch = r.json()
    assert batch["records"][0]["body"] == "héllo"
    assert batch["records"][0]["headers"] == [["k", "v"]]
    assert "body" not in batch["records"][1] and "headers" not in batch["records"][1]
    assert batch["tail"]["seq_num"] == 2
    r = await http.get("/v1/streams/s/records/tail")
    assert r.json()["tail"]["seq_num"] == 2


async def test_json_base64_roundtrip(http):
    data = bytes(range(256))
    b64 = base64.b64encode(data).decode()
    r = await http.post("/v1/streams/s/records", headers={"s2-format": "base64"}, json={
        "records": [{"body": b64, "headers": [[base64.b64encode(b"\xff").decode(), ""]]}]})
    assert r.status_code == 200, r.text
    r = await http.get("/v1/streams/s/records", headers={"s2-format": "base64"})
    rec = r.json()["records"][0]
    assert base64.b64decode(rec["body"]) == data
    assert rec["headers"] == [["/w==", ""]]
    # the same binary record read as raw text: invalid UTF-8 is replaced, not an error
    r = await http.get("/v1/streams/s/records")
    assert "\ufffd" in r.json()["records"][0]["body"]


async def test_json_conditions_and_416(http):
    url = "/v1/streams/s/records"
    assert (await http.post(url, json={"records": [{"body": "x"}], "match_seq_num": 0})
            ).status_code == 200
    r = await http.post(url, json={"records": [{"body": "x"}], "match_seq_num": 0})
    assert r.status_code == 412 and r.json() == {"seq_num_mismatch": 1}
    fence = {"headers": [["", "fence"]], "body": "tok"}
    assert (await http.post(url, json={"records": [fence]})).status_code == 200
    r = await http.post(url, json={"records": [{"body": "y"}], "fencing_token": "other"})
    assert r.status_code == 412 and r.json() == {"fencing_token_mismatch": "tok"}
    r = await http.get(url, params={"seq_num": 9})
    assert r.status_code == 416
    assert r.json()["tail"]["seq_num"] == 2 and r.json()["tail"]["timestamp"] > 0


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.strip().split("\n\n"):
        ev: dict = {}
        for line in block.split("\n"):
            k, _, v = line.partition(": ")
            ev[k] = ev[k] + "\n" + v if k in ev else v
        events.append(ev)
    return events


async def test_sse_bounded_and_resumed(http):
    await http.post("/v1/streams/s/records",
                    json={"records": [{"body": f"r{i}"} for i in range(6)]})
    r = await http.get("/v1/streams/s/records", params={"seq_num": 0, "count": 4},
                       headers={"accept": "text/event-stream"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    events = parse_sse(r.text)
    assert events[-1] == {"data": "[DONE]"}
    batches = [e for e in events if e.get("event") == "batch"]
    bodies = [rec["body"] for e in batches for rec in json.loads(e["data"])["records"]]
    assert bodies == ["r0", "r1", "r2", "r3"]
    assert batches[-1]["id"] == "3,4,40"  # last seq_num, records so far, bytes so far
    # resume after seq 1, as if the client had seen 2 records (20 bytes) of the 4
    r = await http.get("/v1/streams/s/records", params={"seq_num": 0, "count": 4},
                       headers={"accept": "text/event-stream", "last-event-id": "1,2,20"})
    events = parse_sse(r.text)
    bodies = [rec["body"] for e in events if e.get("event") == "batch"
              for rec in json.loads(e["data"])["records"]]
    assert bodies == ["r2", "r3"]
    assert [e["id"] for e in events if e.get("event") == "batch"][-1] == "3,4,40"


async def test_sse_follow_pings_then_records(http):
    got: list[dict] = []

    async def follow():
        async with http.stream("GET", "/v1/streams/s/records",
                               headers={"accept": "text/event-stream"}) as r:
            buf = ""
            async for chunk in r.aiter_text():
                buf += chunk
                while "\n\n" in buf:
                    block, buf = buf.split("\n\n", 1)
                    got.extend(parse_sse(block))
                    if any(e.get("event") == "batch" for e in got):
                        return

    task = asyncio.create_task(follow())
    for _ in range(100):
        if any(e.get("event") == "ping" for e in got):
            break
        await asyncio.sleep(0.05)
    assert any(e.get("event") == "ping" and "timestamp" in json.loads(e["data"]) for e in got)
    await http.post("/v1/streams/s/records", json={"records": [{"body": "live"}]})
    await asyncio.wait_for(task, 5)
    batch = next(e for e in got if e.get("event") == "batch")
    assert json.loads(batch["data"])["records"][0]["body"] == "live"


async def test_sse_error_before_start_is_http_status(http):
    r = await http.get("/v1/streams/missing/records", headers={"accept": "text/event-stream"})
    assert r.status_code == 404 and r.json()["code"] == "stream_not_found"


async def test_basin_from_host_name(server, http):
    async with httpx.AsyncClient(base_url=server.url) as plain:
        r = await plain.get("/v1/streams", headers={"host": f"{BASIN}.b.localhost"})
        assert r.status_code == 200 and [s["name"] for s in r.json()["streams"]] == ["s"]
        r = await plain.get("/v1/streams")
        assert r.status_code == 400 and r.json()["code"] == "bad_header"


async def test_follower_that_leaves_ends_its_session(server, http):
    async with http.stream("GET", "/v1/streams/s/records",
                           headers={"accept": "text/event-stream"}) as r:
        async for _ in r.aiter_bytes():
            break
    for _ in range(100):
        text = (await http.get("/metrics")).text
        if 'method="GET",route="/v1/streams/*/records",status="200"' in text:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the server kept the abandoned session open")


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode, out.decode()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command")
async def test_curl_http1_and_h2c_on_one_port(server, http):
    code, out = await run("curl", "-sS", "--http1.1", "-H", f"s2-basin: {BASIN}",
                          "-H", "content-type: application/json",
                          "-d", '{"records":[{"body":"from curl"}]}',
                          f"{server.url}/v1/streams/s/records")
    assert code == 0 and json.loads(out)["end"]["seq_num"] == 1
    code, out = await run("curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}",
                          f"{server.url}/v1/basins")
    body, version = out.rsplit("\n", 1)
    assert code == 0 and version == "2" and json.loads(body)["basins"][0]["name"] == BASIN
    code, out = await run("curl", "-sS", "-N", "-H", f"s2-basin: {BASIN}",
                          "-H", "accept: text/event-stream",
                          f"{server.url}/v1/streams/s/records?seq_num=0&count=1")
    assert code == 0
    events = parse_sse(out)
    assert json.loads(events[0]["data"])["records"][0]["body"] == "from curl"
    assert events[-1]["data"] == "[DONE]"


async def test_request_token_makes_creates_idempotent(http):
    body = {"stream": "once"}
    first = await http.post("/v1/streams", json=body, headers={"s2-request-token": "t-1"})
    again = await http.post("/v1/streams", json=body, headers={"s2-request-token": "t-1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = await http.post("/v1/streams", json=body, headers={"s2-request-token": "t-2"})
    assert other.status_code == 409
    r = await http.post("/v1/basins", json={"basin": "token-basin"},
                        headers={"s2-request-token": "b-1"})
    assert r.status_code == 201
    r2 = await http.post("/v1/basins", json={"basin": "token-basin"},
                         headers={"s2-request-token": "b-1"})
    assert r2.status_code == 201 and r2.json() == r.json()


async def test_kafka_view_hook(make_server):
    """Reads of streams the Kafka view claims go through it; writes to them are refused."""
    from s2core.records import ReadBatch, SequencedRecord, StreamPosition

    class View:
        def is_kafka_stream(self, basin, name):
            return name.startswith("kafka/")

        async def read(self, basin, name, **read_args):
            return ReadBatch([SequencedRecord(0, 1, (), b"from kafka")], StreamPosition(1, 1))

        async def read_session(self, basin, name, **read_args):
            yield ReadBatch([SequencedRecord(1, 2, (), b"followed")], StreamPosition(2, 2))

    server = await make_server(kafka_view=View())
    async with httpx.AsyncClient(base_url=server.url, headers=H) as http:
        r = await http.get("/v1/streams/kafka%2Ft%2F0/records")
        assert r.json()["records"][0]["body"] == "from kafka"
        r = await http.post("/v1/streams/kafka%2Ft%2F0/records",
                            json={"records": [{"body": "x"}]})
        assert r.status_code == 409 and r.json()["code"] == "kafka_partition"


async def test_s2s_read_session_frames_and_heartbeats(http):
    """S2S at the frame level: the batch, then heartbeats (no records, the tail) while
    following."""
    from s2core.http import s2s
    from s2core.http.proto import ReadBatchPb
    await http.post("/v1/streams/s/records", json={"records": [{"body": "a"}]})
    batches = []
    async with http.stream("GET", "/v1/streams/s/records", params={"seq_num": 0},
                           headers={"content-type": "s2s/proto"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "s2s/proto"
        dec = s2s.FrameDecoder(1 << 20)
        async for chunk in r.aiter_bytes():
            dec.feed(chunk)
            while (f := dec.next_frame()) is not None:
                assert not f.terminal
                b = ReadBatchPb()
                b.ParseFromString(f.body)
                batches.append(b)
            if len(batches) >= 3:
                break
    assert [r.body for r in batches[0].records] == [b"a"]
    for hb in batches[1:]:
        assert len(hb.records) == 0 and hb.HasField("tail") and hb.tail.seq_num == 1
