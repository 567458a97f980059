"""Shutting down with sessions open: they end at once and clients are told to reconnect."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from s2_sdk import AppendInput, Record, S2Error, SeqNum


async def test_shutdown_ends_read_sessions(make_server):
    server = await make_server()
    events: list[str] = []
    async with server.sdk() as s2, httpx.AsyncClient(base_url=server.url) as http:
        basin = s2.basin("test-basin")
        await basin.create_stream("s")

        async def follow_sdk():
            with pytest.raises(S2Error):  # reconnecting to a stopped server fails
                async for _ in basin.stream("s").read_session(start=SeqNum(0)):
                    pass
            events.append("sdk ended")

        async def follow_sse():
            async with http.stream("GET", "/v1/streams/s/records",
                                   headers={"s2-basin": "test-basin",
                                            "accept": "text/event-stream"}) as r:
                text = "".join([c async for c in r.aiter_text()])
            assert "event: error" in text and "server_draining" in text
            events.append("sse ended")

        tasks = [asyncio.create_task(follow_sdk()), asyncio.create_task(follow_sse())]
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await server.stop()
        assert loop.time() - t0 < 2  # not Hypercorn's graceful timeout
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert sorted(events) == ["sdk ended", "sse ended"]


async def test_shutdown_during_append_session_loses_and_duplicates_nothing(make_server):
    server = await make_server()
    acked = []
    async with server.sdk() as s2:
        basin = s2.basin("test-basin")
        await basin.create_stream("s")
        with pytest.raises(S2Error):
            async with basin.stream("s").append_session() as session:
                for i in range(10_000):
                    ticket = await session.submit(AppendInput(records=[Record(b"%d" % i)]))
                    if i == 50:
                        asyncio.get_running_loop().create_task(server.stop())
                    acked.append(asyncio.ensure_future(ticket))
                    await asyncio.sleep(0)
    done = [t.result().start.seq_num for t in acked if t.done() and not t.exception()]
    assert done == list(range(len(done))) and done
    # the server is gone; its store (memory backends) can still be read in-process
    batch = await server.store.read("test-basin", "s", seq_num=0, count=1000)
    bodies = [r.body for r in batch.records]
    assert bodies[:len(done)] == [b"%d" % i for i in range(len(done))]
    assert len(set(bodies)) == len(bodies)  # nothing applied twice
