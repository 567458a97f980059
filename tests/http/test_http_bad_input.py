"""Bad input gets the spec's status and error body, and the server goes on serving."""
from __future__ import annotations

import asyncio
import json
from unittest.mock import ANY

import httpx
import pytest

from s2core.http import s2s

BASIN = "test-basin"
H = {"s2-basin": BASIN}
RECORDS = "/v1/streams/s/records"


@pytest.fixture
async def http(server):
    async with httpx.AsyncClient(base_url=server.url, headers=H, timeout=20) as client:
        assert (await client.post("/v1/streams", json={"stream": "s"})).status_code == 201
        yield client
        # whatever came before, the server still serves ordinary requests
        r = await client.post(RECORDS, json={"records": [{"body": "still ok"}]})
        assert r.status_code == 200, r.text


def err(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == code and isinstance(body["message"], str), body


@pytest.mark.parametrize("body", [b"{", b"not json", b"\xff\xfe", b'{"records": [}'])
async def test_malformed_json(http, body):
    ct = {"content-type": "application/json"}
    err(await http.post(RECORDS, content=body, headers=ct), 400, "bad_json")
    err(await http.post("/v1/streams", content=body, headers=ct), 400, "bad_json")
    err(await http.post("/v1/basins", content=body, headers=ct), 400, "bad_json")


@pytest.mark.parametrize("body", [
    {"records": [{"body": "x"}], "extra": 1},
    {"records": [{"body": "x", "bogus": True}]},
    {"records": "nope"},
    {"records": [{"body": 5}]},
    {"records": [{"timestamp": "yesterday"}]},
    {"records": [{"headers": [["only-name"]]}]},
    {"records": [{"body": "x"}], "match_seq_num": -1},
    {},
    [1, 2],
])
async def test_append_input_shape(http, body):
    err(await http.post(RECORDS, json=body), 400, "bad_json")


async def test_unknown_fields_elsewhere(http):
    err(await http.post("/v1/streams", json={"stream": "t", "colour": "red"}), 400, "bad_json")
    err(await http.post("/v1/basins", json={"basin": "some-basin", "x": 1}), 400, "bad_json")
    # inside a config, s2core validates the fields: invalid content, 422
    err(await http.post("/v1/streams", json={"stream": "t", "config": {"colour": "red"}}),
        422, "invalid")
    err(await http.get(RECORDS, params={"seq_num": 0, "colour": "red"}), 400, "bad_query")


async def test_invalid_values_are_422(http):
    err(await http.post(RECORDS, json={"records": []}), 422, "invalid")
    err(await http.post(RECORDS, json={"records": [{"body": "x"}] * 1001}), 422, "invalid")
    big = "x" * (600 * 1024)
    err(await http.post(RECORDS, json={"records": [{"body": big}, {"body": big}]}),
        422, "invalid")
    err(await http.post(RECORDS, headers={"s2-format": "base64"},
                        json={"records": [{"body": "not base64!"}]}), 422, "invalid")
    err(await http.post("/v1/basins", json={"basin": "Bad_Name"}), 422, "invalid")
    err(await http.post("/v1/basins", json={"basin": "good-basin", "location": "mars"}),
        422, "invalid")
    err(await http.post(RECORDS, json={"records": [{"body": "x"}],
                                       "fencing_token": "t" * 37}), 422, "invalid")
    err(await http.post(RECORDS, json={"records": [{"headers": [["", "fence"]],
                                                    "body": "f" * 37}]}), 422, "invalid")


async def test_oversized_body_is_413(server, http):
    # declared too large: refused before the body is read
    status, body = await raw_request(
        server, b"/v1/streams/s/records", method=b"POST",
        extra=b"content-type: application/json\r\ncontent-length: 9437184\r\n",
        body=b"x" * 1024)
    assert (status, body["code"]) == (413, "request_too_large")
    # chunked, so only counting tells
    chunk = b"x" * 65536
    chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 140 + b"0\r\n\r\n"
    status, body = await raw_request(
        server, b"/v1/streams/s/records", method=b"POST",
        extra=b"content-type: application/json\r\ntransfer-encoding: chunked\r\n",
        body=chunks)
    assert (status, body["code"]) == (413, "request_too_large")


async def test_invalid_names(http):
    err(await http.get("/v1/basins/UPPER-CASE"), 400, "bad_path")
    err(await http.get("/v1/basins/short"), 400, "bad_path")
    err(await http.get("/v1/streams/" + "n" * 513), 400, "bad_path")
    err(await http.get("/v1/streams", headers={"s2-basin": "-bad-"}), 400, "bad_header")


async def raw_request(server, target: bytes, extra: bytes = b"", method: bytes = b"GET",
                      body: bytes = b"") -> tuple[int, dict]:
    """Send exact bytes (httpx would normalize a broken URL) and read the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(method + b" " + target + b" HTTP/1.1\r\nhost: x\r\ns2-basin: " +
                 BASIN.encode() + b"\r\nconnection: close\r\n" + extra + b"\r\n")
    try:
        writer.write(body)
        await writer.drain()
    except ConnectionError:
        pass  # the server may answer and close before taking all of a refused body
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(("target", "code"), [
    (b"/v1/streams/%zz/records", "bad_path"),
    (b"/v1/streams/ab%/records", "bad_path"),
    (b"/v1/streams/%ff%fe/records", "bad_path"),  # not UTF-8
    (b"/v1/streams/s/records?seq_num=%g1", "bad_query"),
    (b"/v1/streams/s/records?seq_num=1&seq_num=2", "bad_query"),
    (b"/v1/streams/s/records?seq_num=abc", "bad_query"),
    (b"/v1/streams/s/records?clamp=yes", "bad_query"),
    (b"/v1/streams/s/records?seq_num=1&timestamp=2", "bad_query"),
    (b"/v1/basins?limit=-1", "bad_query"),
])
async def test_bad_urls(server, http, target, code):
    status, body = await raw_request(server, target)
    assert (status, body["code"]) == (400, code), body


async def test_percent_encoded_names_work(server, http):
    await http.post("/v1/streams", json={"stream": "a/b c"})
    status, body = await raw_request(server, b"/v1/streams/a%2Fb%20c/records/tail")
    assert status == 200 and body["tail"]["seq_num"] == 0


async def test_bad_headers(http):
    err(await http.get(RECORDS, headers={"s2-format": "yaml"}), 400, "bad_header")
    err(await http.get(RECORDS, headers={"accept": "text/event-stream",
                                         "last-event-id": "nonsense"}), 400, "bad_header")


async def test_wrong_content_types(http):
    err(await http.post(RECORDS, content=b"hello", headers={"content-type": "text/plain"}),
        415, "bad_header")
    err(await http.post(RECORDS, content=b"\x0a\x05\xff\xff\xff",
                        headers={"content-type": "application/x-protobuf"}), 400, "bad_proto")
    # a protobuf whose string field is not UTF-8
    err(await http.post(RECORDS, content=b"\x1a\x02\xff\xfe",
                        headers={"content-type": "application/x-protobuf"}), 400, "bad_proto")


async def test_routing_errors(http):
    err(await http.get("/v2/basins"), 404, "not_found")
    err(await http.delete(RECORDS), 405, "method_not_allowed")
    err(await http.get("/v1/locations"), 501, "not_implemented")
    err(await http.get("/v1/access-tokens/x"), 405, "method_not_allowed")


def frame(body: bytes, flag: int = 0) -> bytes:
    return (1 + len(body)).to_bytes(3, "big") + bytes([flag]) + body


def terminal_of(data: bytes) -> tuple[int, dict, int]:
    """The terminal frame at the end of an S2S response, and how many frames preceded it."""
    dec = s2s.FrameDecoder(1 << 24)
    dec.feed(data)
    n = 0
    while (f := dec.next_frame()) is not None:
        if f.terminal:
            return int.from_bytes(f.body[:2], "big"), json.loads(f.body[2:]), n
        n += 1
    raise AssertionError("no terminal frame")


def append_input(body: bytes) -> bytes:
    from s2core.http.proto import AppendInputPb
    msg = AppendInputPb()
    msg.records.add(body=body)
    return msg.SerializeToString()


@pytest.mark.parametrize(("payload", "acks", "status", "code"), [
    (b"\x00\x00\x00", 0, 400, "bad_frame"),  # no flag byte
    (frame(b"\x01\x02")[:-1], 0, 400, "bad_frame"),  # cut short
    (frame(append_input(b"ok")) + frame(b"\xff\xff"), 1, 400, "bad_proto"),
    (frame(b"\x00\xc8{}", 0x80), 0, 400, "bad_frame"),  # a terminal frame from the client
    (frame(b"junk", 0x60), 0, 400, "bad_frame"),  # compression 3 does not exist
    (frame(b"not gzip", 0x40), 0, 400, "bad_frame"),
    (frame(b"not zstd", 0x20), 0, 400, "bad_frame"),
    (b"\xff\xff\xff\x00", 0, 400, "bad_frame"),  # 16 MiB message announced
    (frame(b""), 0, 422, "invalid"),  # an AppendInput without records
])
async def test_broken_s2s_frames(http, payload, acks, status, code):
    r = await http.post(RECORDS, content=payload, headers={"content-type": "s2s/proto"})
    assert r.status_code == 200 and r.headers["content-type"] == "s2s/proto"
    got_status, body, n = terminal_of(r.content)
    assert (got_status, body["code"], n) == (status, code, acks), body


async def test_s2s_over_http1_works(http):
    payload = frame(append_input(b"a")) + frame(append_input(b"b"))
    r = await http.post(RECORDS, content=payload, headers={"content-type": "s2s/proto"})
    from s2core.http.proto import AppendAckPb
    dec = s2s.FrameDecoder(1 << 20)
    dec.feed(r.content)
    acks = []
    while (f := dec.next_frame()) is not None:
        ack = AppendAckPb()
        ack.ParseFromString(f.body)
        acks.append((ack.start.seq_num, ack.end.seq_num))
    assert acks == [(0, 1), (1, 2)]


async def test_early_answers_keep_the_http2_connection(server):
    """An answer sent before the body is all in must not cost the HTTP/2 connection (other
    streams on it, in s2-sdk's case every request) its life."""
    async with httpx.AsyncClient(http1=False, http2=True, base_url=server.url, headers=H,
                                 timeout=20) as h2:
        assert (await h2.post("/v1/streams", json={"stream": "s"})).http_version == "HTTP/2"
        r = await h2.post(RECORDS, content=b"x" * (9 * 1024 * 1024),
                          headers={"content-type": "application/json"})
        err(r, 413, "request_too_large")
        r = await h2.post(RECORDS, content=b"[" * 300_000,
                          headers={"content-type": "application/json", "s2-format": "nope"})
        err(r, 400, "bad_header")  # refused before the body was read
        payload = frame(b"\xff") + frame(append_input(b"x")) * 20_000
        r = await h2.post(RECORDS, content=payload, headers={"content-type": "s2s/proto"})
        assert terminal_of(r.content)[:2] == (400, {"code": "bad_proto", "message": ANY})
        r = await h2.get(RECORDS + "/tail")
        assert r.status_code == 200 and r.json()["tail"]["seq_num"] == 0


async def test_bad_content_encoding(http):
    import gzip
    js = {"content-type": "application/json"}
    err(await http.post(RECORDS, content=b"x", headers={**js, "content-encoding": "br"}),
        415, "bad_header")
    err(await http.post(RECORDS, content=b"not gzip", headers={**js, "content-encoding": "gzip"}),
        400, "bad_json")
    err(await http.post(RECORDS, content=b"not zstd", headers={
        "content-type": "application/x-protobuf", "content-encoding": "zstd"}), 400, "bad_proto")
    bomb = gzip.compress(b" " * (20 * 1024 * 1024))
    err(await http.post(RECORDS, content=bomb, headers={**js, "content-encoding": "gzip"}),
        413, "request_too_large")
    ok = gzip.compress(json.dumps({"records": [{"body": "zipped"}]}).encode())
    r = await http.post(RECORDS, content=ok, headers={**js, "content-encoding": "gzip"})
    assert r.status_code == 200
