"""A StreamStore on memory backends served over HTTP in-process, and clients for it."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from s2_sdk import S2, Endpoints, Retry, Timeout

from s2core.channel import ChannelConfig
from s2core.http import create_app, serve_http
from s2core.http.context import Settings
from s2core.http.server import bind_socket
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.store import ChannelSpec, StreamStore

BASIN = "test-basin"


class Server:
    """A running server: its URL, its store, and how to build clients for it."""

    def __init__(self, store: StreamStore, port: int) -> None:
        self.store = store
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def sdk(self, token: str = "token", **kw) -> S2:
        kw.setdefault("retry", Retry(max_attempts=1))
        kw.setdefault("timeout", Timeout(request=timedelta(seconds=5)))
        return S2(token, endpoints=Endpoints(account=self.url, basin=self.url), **kw)


async def start_server(auth_tokens=None, settings: Settings | None = None, kafka_view=None,
                       metadata=None):
    store = await StreamStore.open(
        metadata or MemoryMetadataStore(), MemoryObjectStore("segments"),
        [ChannelSpec("ch0", [MemoryObjectStore(f"r{i}") for i in range(3)], 2,
                     ChannelConfig())])
    await store.ensure_basin(BASIN)
    sock = bind_socket()
    stop = asyncio.Event()
    app = create_app(store, auth_tokens, kafka_view,
                     settings=settings or Settings(heartbeat_s=0.2))
    port = sock.getsockname()[1]
    task = asyncio.create_task(serve_http(app, "127.0.0.1", 0, stop, sock=sock))
    server = Server(store, port)
    # wait until it answers
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.01)

    async def shutdown():
        if stop.is_set():
            return
        stop.set()
        await asyncio.wait_for(task, 10)
        await store.close()

    server.stop = shutdown
    return server, shutdown


@pytest.fixture
async def server():
    srv, shutdown = await start_server()
    yield srv
    await shutdown()


@pytest.fixture
async def make_server():
    """Start servers with other settings (auth tokens...); all stopped at teardown."""
    stops = []

    async def make(**kw) -> Server:
        srv, shutdown = await start_server(**kw)
        stops.append(shutdown)
        return srv

    yield make
    for stop in stops:
        await stop()


@pytest.fixture
async def s2(server):
    async with server.sdk() as client:
        yield client


@pytest.fixture
async def basin(s2):
    return s2.basin(BASIN)
