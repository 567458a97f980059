"""Handlers of /v1/streams/{stream}/records: append, read, check tail (unary forms).

Sessions (SSE, S2S) are in sessions.py; this module picks the form from the headers:
`Content-Type: s2s/proto` asks for an S2S session, `Accept: text/event-stream` for SSE, and
otherwise JSON or protobuf (`application/x-protobuf`) bodies are exchanged.
"""
from __future__ import annotations

from s2core.http import jsoncodec as jc
from s2core.http import proto
from s2core.http.asgi import Request, Response, Send, StreamingResponse
from s2core.http.context import Api
from s2core.http.errors import HttpError, bad_request, invalid
from s2core.http.readparams import (
    UNARY_MAX_BYTES,
    UNARY_MAX_RECORDS,
    ReadParams,
    parse_read_params,
)
from s2core.http.sessions import append_session, s2s_read_session, sse_read_session
from s2core.http.streams import create_with_header_config
from s2core.http.tokens import check_commands
from s2core.records import ReadBatch, metered_size

PROTO_TYPES = ("application/x-protobuf", "application/protobuf")
S2S_TYPE = "s2s/proto"


def check_no_encryption(req: Request) -> None:
    if "s2-encryption-key" in req.headers:
        raise invalid("stream encryption is not supported by this server")


async def check_tail(api: Api, req: Request, name: str) -> Response:
    tail = await api.store.check_tail(api.basin_of(req), api.stream_name(name))
    return Response.json({"tail": jc.position(tail)})


async def append(api: Api, req: Request, send: Send, name: str) -> Response | StreamingResponse:
    basin, name = api.basin_of(req), api.stream_name(name)
    check_no_encryption(req)
    ctype = req.content_type()
    if ctype == S2S_TYPE:
        return await append_session(api, req, send, basin, name)
    if ctype in PROTO_TYPES:
        try:
            inp = proto.decode_append_input(await req.body())
        except proto.DecodeError as exc:
            raise bad_request("bad_proto", f"malformed AppendInput: {exc}") from None
    elif ctype in ("", "application/json"):
        fmt = jc.parse_format(req.headers.get("s2-format"))
        inp = jc.decode_append_input(await req.json(), fmt)
    else:
        raise HttpError(415, "bad_header", f"unsupported content type {ctype!r}")
    api.check_writable(basin, name)
    check_commands(req, inp.records, basin, name)
    await create_with_header_config(api, req, basin, name, "append")
    ack = await api.store.append(basin, name, inp.records, match_seq_num=inp.match_seq_num,
                                 fencing_token=inp.fencing_token)
    nbytes = sum(metered_size(r.headers, r.body) for r in inp.records)
    api.metrics.on_append(len(inp.records), nbytes)
    api.count_append(basin, name, 1, nbytes)
    if any(req.accepts(t) for t in PROTO_TYPES):
        return Response(200, proto.encode_append_ack(ack), PROTO_TYPES[0])
    return Response.json(jc.append_ack(ack))


async def read(api: Api, req: Request, send: Send, name: str) -> Response | StreamingResponse:
    basin, name = api.basin_of(req), api.stream_name(name)
    check_no_encryption(req)
    params = parse_read_params(req)
    if req.content_type() == S2S_TYPE:
        return await s2s_read_session(api, req, send, basin, name, params)
    if req.accepts("text/event-stream"):
        return await sse_read_session(api, req, send, basin, name, params)
    as_proto = any(req.accepts(t) for t in PROTO_TYPES)
    fmt = "raw" if as_proto else jc.parse_format(req.headers.get("s2-format"))
    await create_with_header_config(api, req, basin, name, "read")
    batch = await unary_read(api, basin, name, params)
    nbytes = sum(metered_size(r.headers, r.body) for r in batch.records)
    api.metrics.on_read(len(batch.records), nbytes)
    api.usage.add(basin, "read_ops_unary")
    api.usage.add(basin, "read_bytes", nbytes)
    if as_proto:
        return Response(200, proto.encode_read_batch(batch), PROTO_TYPES[0])
    return Response.json(jc.read_batch(batch, fmt))


async def unary_read(api: Api, basin: str, name: str, p: ReadParams) -> ReadBatch:
    """One bounded read; with `wait`, a long poll for the first records past the tail."""
    count = min(p.count or UNARY_MAX_RECORDS, UNARY_MAX_RECORDS)
    nbytes = min(p.bytes or UNARY_MAX_BYTES, UNARY_MAX_BYTES)
    reader = api.reader(basin, name)
    batch = await reader.read(basin, name, **p.start_args(), count=count,
                              max_bytes=nbytes, until=p.until)
    wait = min(p.wait or 0, api.settings.max_unary_wait_s)
    if batch.records or wait <= 0 or batch.tail is None:
        return batch
    session = reader.read_session(basin, name, seq_num=batch.tail.seq_num, count=count,
                                     max_bytes=nbytes, until=p.until, clamp=True,
                                     wait_s=wait, heartbeat_s=wait)
    try:
        async for b in session:
            if b.records:
                return b
            batch = b  # a heartbeat: no records yet, but a fresher tail
    finally:
        await session.aclose()
    return batch
