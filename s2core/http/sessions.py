"""Read sessions (SSE and S2S) and S2S append sessions.

A read session first does one unary read, before answering: a missing stream or a start
past the tail is an ordinary HTTP error (404, 416), and the client gets its 200 at once
instead of after the first heartbeat. It then follows the stream with
`StreamStore.read_session`; an empty batch is a heartbeat (an SSE `ping`, or an S2S
ReadBatch with only the tail). Errors after the 200 travel in-band: an SSE `error` event or
an S2S terminal frame. A session ends when its bounds are met, its `wait` runs out, or the
client leaves (watched through ASGI's http.disconnect, so a vanished follower never stays).

Append sessions apply their inputs in order and ack each in order; inputs already waiting
are applied as one store append when that changes no outcome (appendgroup.py); see
docs/decisions/0004-s2-http-api.md for why they are not pipelined into s2core.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from s2core.http import appendgroup, proto, s2s, sse
from s2core.http import jsoncodec as jc
from s2core.http.asgi import Request, Send, StreamingResponse, start_stream
from s2core.http.context import Api
from s2core.http.errors import HttpError, bad_request, from_store_error
from s2core.http.readparams import UNARY_MAX_BYTES, UNARY_MAX_RECORDS, ReadParams
from s2core.http.streams import create_with_header_config
from s2core.http.tokens import check_commands
from s2core.records import ReadBatch, metered_size

log = logging.getLogger(__name__)

_INBOX = 256  # decoded inputs waiting to be applied, per append session


class _Follow:
    """The batches of one read session: a first unary read, then the live tail."""

    def __init__(self, api: Api, basin: str, name: str, p: ReadParams) -> None:
        self.api, self.basin, self.name, self.p = api, basin, name, p
        self.reader = api.reader(basin, name)
        self.count_left = p.count
        self.bytes_left = p.bytes
        # S2: without bounds a session follows forever; with bounds it stops at the tail
        self.wait_s: float | None = p.wait if p.wait is not None else (
            0 if p.bounded() else None)

    async def first(self) -> ReadBatch:
        """The first batch; raises (before any response is sent) if the read is invalid."""
        p = self.p
        return await self.reader.read(
            self.basin, self.name, **p.start_args(),
            count=min(self.count_left or UNARY_MAX_RECORDS, UNARY_MAX_RECORDS),
            max_bytes=min(self.bytes_left or UNARY_MAX_BYTES, UNARY_MAX_BYTES), until=p.until)

    def _consume(self, batch: ReadBatch) -> bool:
        """Account for a delivered batch; True when the session's bounds are met."""
        if self.count_left is not None:
            self.count_left -= len(batch.records)
        if self.bytes_left is not None:
            self.bytes_left -= sum(metered_size(r.headers, r.body) for r in batch.records)
        return (self.count_left is not None and self.count_left <= 0) or \
            (self.bytes_left is not None and self.bytes_left <= 0)

    async def batches(self, first: ReadBatch) -> AsyncIterator[ReadBatch]:
        yield first
        if self._consume(first):
            return
        if first.records:
            nxt = first.records[-1].end_seq
        else:
            assert first.tail is not None, "a read always reports the tail"
            nxt = first.tail.seq_num
        session = self.reader.read_session(
            self.basin, self.name, seq_num=nxt, count=self.count_left,
            max_bytes=self.bytes_left, until=self.p.until, clamp=True, wait_s=self.wait_s,
            heartbeat_s=self.api.settings.heartbeat_s)
        try:
            async for batch in session:
                yield batch
                if batch.records and self._consume(batch):
                    return
        finally:
            await session.aclose()


DRAINING = HttpError(503, "server_draining", "the server is shutting down; reconnect")


async def _run(api: Api, req: Request, work: Callable[[], Awaitable[None]]) -> bool:
    """Run `work`, cancelling it if the client disconnects or the server starts draining
    first. Returns whether it was cut short by draining (the caller then says so in-band:
    s2-sdk reconnects on `server_draining` without spending a retry)."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(work())
        watchers = [tg.create_task(req.wait_disconnect()),
                    tg.create_task(api.draining.wait())]
        task.add_done_callback(lambda _: [w.cancel() for w in watchers])
        for w in watchers:
            w.add_done_callback(lambda _: task.cancel())
    return task.cancelled() and api.draining.is_set()


async def _prepare(api: Api, req: Request, basin: str, name: str, p: ReadParams) -> _Follow:
    await create_with_header_config(api, req, basin, name, "read")
    api.usage.add(basin, "read_ops_streaming")
    return _Follow(api, basin, name, p)


def _count(api: Api, batch: ReadBatch, basin: str) -> int:
    nbytes = sum(metered_size(r.headers, r.body) for r in batch.records)
    api.metrics.on_read(len(batch.records), nbytes)
    if nbytes:
        api.usage.add(basin, "read_bytes", nbytes)
    return nbytes


async def sse_read_session(api: Api, req: Request, send: Send, basin: str, name: str,
                           p: ReadParams) -> StreamingResponse:
    fmt = jc.parse_format(req.headers.get("s2-format"))
    last = sse.parse_last_event_id(req.headers.get("last-event-id"))
    done_count = done_bytes = 0
    finished = False
    if last is not None:
        done_count, done_bytes = last.count, last.bytes
        p.seq_num, p.timestamp, p.tail_offset = last.seq_num + 1, None, None
        if p.count is not None:
            p.count -= min(p.count, last.count)
            finished = p.count == 0
        if p.bytes is not None:
            p.bytes -= min(p.bytes, last.bytes)
            finished = finished or p.bytes == 0
    follow = await _prepare(api, req, basin, name, p)
    first = None if finished else await follow.first()
    await start_stream(send, "text/event-stream")

    async def body(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    async def work() -> None:
        nonlocal done_count, done_bytes
        try:
            if first is not None:
                async for batch in follow.batches(first):
                    if not batch.records:
                        await body(sse.ping_event(int(time.time() * 1000)))
                        continue
                    done_count += len(batch.records)
                    done_bytes += _count(api, batch, basin)
                    event_id = sse.LastEventId(batch.records[-1].seq_num, done_count, done_bytes)
                    await body(sse.batch_event(jc.read_batch(batch, fmt), event_id))
            await body(sse.done_event())
        except Exception as exc:  # noqa: BLE001 - in-band: the 200 is already sent
            await body(sse.error_event(_session_error(exc).body))

    if await _run(api, req, work):
        await body(sse.error_event(DRAINING.body))
    await end_stream(req, send)
    return StreamingResponse()


async def s2s_read_session(api: Api, req: Request, send: Send, basin: str, name: str,
                           p: ReadParams) -> StreamingResponse:
    algo = s2s.negotiate(req.headers.get("accept-encoding"))
    follow = await _prepare(api, req, basin, name, p)
    first = await follow.first()
    await start_stream(send, "s2s/proto")

    async def work() -> None:
        try:
            async for batch in follow.batches(first):
                _count(api, batch, basin)
                msg = s2s.encode_message(proto.encode_read_batch(batch), algo)
                await send({"type": "http.response.body", "body": msg, "more_body": True})
        except Exception as exc:  # noqa: BLE001 - in-band: the 200 is already sent
            await _send_terminal(send, _session_error(exc))

    if await _run(api, req, work):
        await _send_terminal(send, DRAINING)
    await end_stream(req, send)
    return StreamingResponse()


async def end_stream(req: Request, send: Send) -> None:
    """End a streamed response, after the request body (see Request.discard_rest)."""
    await req.discard_rest()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _session_error(exc: Exception) -> HttpError:
    err = from_store_error(exc)
    if err.status >= 500:
        log.warning("session failed", exc_info=exc)
    return err


async def _send_terminal(send: Send, err: HttpError) -> None:
    frame = s2s.encode_terminal(err.status, err.body)
    await send({"type": "http.response.body", "body": frame, "more_body": True})


async def append_session(api: Api, req: Request, send: Send, basin: str,
                         name: str) -> StreamingResponse:
    """Apply AppendInputs in order as they arrive and answer each with its AppendAck.

    A reader task decodes frames into a bounded inbox (a malformed frame goes in as an
    error, after the inputs before it); the applier takes whatever is waiting, appends it
    (grouped, see appendgroup.py) and sends the acks of a group in one write."""
    algo = s2s.negotiate(req.headers.get("accept-encoding"))
    api.check_writable(basin, name)
    await create_with_header_config(api, req, basin, name, "append")
    await start_stream(send, "s2s/proto")
    inbox: asyncio.Queue[proto.ParsedAppendInput | HttpError | None] = asyncio.Queue(
        maxsize=_INBOX)

    async def read_inputs() -> None:
        decoder = s2s.FrameDecoder(api.settings.max_message_bytes)
        try:
            async for chunk in req.stream():
                decoder.feed(chunk)
                while (frame := decoder.next_frame()) is not None:
                    if frame.terminal:
                        raise s2s.BadFrame("a client may not send a terminal frame")
                    try:
                        inp = proto.decode_append_input(frame.body)
                    except proto.DecodeError as exc:
                        raise bad_request("bad_proto", f"malformed AppendInput: {exc}") \
                            from None
                    check_commands(req, inp.records, basin, name)
                    await inbox.put(inp)
            if decoder.pending():
                raise s2s.BadFrame("the session ended inside a frame")
            await inbox.put(None)
        except s2s.BadFrame as exc:
            await inbox.put(bad_request("bad_frame", str(exc)))
        except HttpError as exc:
            await inbox.put(exc)

    async def apply_inputs() -> None:
        limits = api.store.limits
        while True:
            items = [await inbox.get()]
            while not inbox.empty():
                items.append(inbox.get_nowait())
            i = 0
            while i < len(items):
                item = items[i]
                if not isinstance(item, proto.ParsedAppendInput):
                    if item is not None:
                        await _send_terminal(send, item)
                    return
                run = _takewhile_inputs(items, i)
                n = appendgroup.plan_group(run, limits.max_append_records,
                                           limits.max_append_bytes)
                group = appendgroup.merge(run[:n])
                try:
                    ack = await api.store.append(basin, name, group.records,
                                                 match_seq_num=group.match_seq_num,
                                                 fencing_token=group.fencing_token)
                except Exception as exc:  # noqa: BLE001 - in-band: the 200 is already sent
                    await _send_terminal(send, _session_error(exc))
                    return
                nbytes = sum(metered_size(r.headers, r.body) for r in group.records)
                api.metrics.on_append(len(group.records), nbytes)
                api.count_append(basin, name, n, nbytes)
                acks = appendgroup.split_ack(ack, [len(x.records) for x in run[:n]])
                out = b"".join(s2s.encode_message(proto.encode_append_ack(a), algo)
                               for a in acks)
                await send({"type": "http.response.body", "body": out, "more_body": True})
                i += n

    async def on_drain() -> None:
        # stop taking inputs; the ones already taken are applied and acked, then the client
        # is told to reconnect (and resends only what was not acked)
        await api.draining.wait()
        reader.cancel()
        await inbox.put(DRAINING)

    async with asyncio.TaskGroup() as tg:
        reader = tg.create_task(read_inputs())
        applier = tg.create_task(apply_inputs())
        drainer = tg.create_task(on_drain())
        # the applier may stop early (an error): then nobody drains the inbox
        applier.add_done_callback(lambda _: (reader.cancel(), drainer.cancel()))
    await end_stream(req, send)
    return StreamingResponse()


def _takewhile_inputs(items: list, start: int) -> list[proto.ParsedAppendInput]:
    out = []
    for x in items[start:]:
        if not isinstance(x, proto.ParsedAppendInput):
            break
        out.append(x)
    return out
