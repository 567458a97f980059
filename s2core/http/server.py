"""Serving the app with Hypercorn: HTTP/1.1 and cleartext HTTP/2 (h2c) on one port.

Hypercorn answers HTTP/1.1, HTTP/2 with prior knowledge (what s2-sdk speaks: it opens a
plain TCP connection and starts with the HTTP/2 preface) and the h2c Upgrade, all on the
same listening socket. With a certificate and key it serves https instead, HTTP/2 or
HTTP/1.1 as ALPN negotiates.
"""
from __future__ import annotations

import asyncio
import socket
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

from s2core.http.asgi import Receive, Scope, Send


def hypercorn_config(host: str, port: int, sock: socket.socket | None = None, *,
                     certfile: str | None = None, keyfile: str | None = None) -> Config:
    config = Config()
    if certfile:  # https (TLS 1.2 or later), HTTP/2 by ALPN
        config.certfile, config.keyfile = certfile, keyfile
    if sock is not None:
        # Hypercorn adopts the descriptor and closes it; detach so nobody closes it twice
        config.bind = [f"fd://{sock.detach()}"]
    else:
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.keep_alive_timeout = 90  # the SDK keeps idle connections for 90 s
    config.graceful_timeout = 5
    config.h2_max_concurrent_streams = 1000
    # Hypercorn drops a connection after this many requests, and drops it abruptly: the
    # request that crossed the limit gets no answer (s2-sdk then times out). The SDK keeps
    # one connection for everything, so never recycle.
    config.keep_alive_max_requests = sys.maxsize
    config.h11_max_incomplete_size = 64 * 1024
    return config


async def serve_http(app: object, host: str, port: int, shutdown_event: asyncio.Event, *,
                     sock: socket.socket | None = None, certfile: str | None = None,
                     keyfile: str | None = None) -> None:
    """Serve `app` on host:port until `shutdown_event` is set, then shut down gracefully.

    With `sock` (bound and listening, e.g. from `bind_socket`), serve on it instead; the
    server takes it over and closes it. With `certfile` and `keyfile` (PEM), serve https."""
    config = hypercorn_config(host, port, sock, certfile=certfile, keyfile=keyfile)

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)  # type: ignore[operator]

    async def shutdown_trigger() -> None:
        await shutdown_event.wait()
        # sessions never end by themselves: end them before Hypercorn's graceful wait
        drain = getattr(app, "drain", None)
        if drain is not None:
            drain()

    await serve(asgi, config, shutdown_trigger=shutdown_trigger, mode="asgi")


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one (read it with getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock
