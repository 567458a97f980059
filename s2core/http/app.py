"""The ASGI app of S2's REST API over a StreamStore: routing, auth, errors, metrics.

    create_app(store, auth_tokens=None, kafka_view=None) -> ASGI app

Routes: /health, /metrics (Prometheus), /v1/basins[/{basin}], /v1/streams[/{stream}],
/v1/streams/{stream}/records[/tail]. With `auth_tokens`, every /v1 request needs
`Authorization: Bearer <one of them>` (401 without one, 403 with a wrong one) and is refused
before it touches the store.
"""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from s2core.http import basins, records, streams
from s2core.http.asgi import Receive, Request, Response, Scope, Send, StreamingResponse
from s2core.http.context import Api, KafkaView, Settings
from s2core.http.errors import HttpError, from_store_error
from s2core.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from s2core.store import StreamStore

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Response | StreamingResponse]]

# (path pattern, {method: (handler, takes send)}); "*" matches one path segment
_ROUTES: list[tuple[tuple[str, ...], dict[str, tuple[Handler, bool]]]] = [
    (("v1", "basins"), {"GET": (basins.list_basins, False),
                        "POST": (basins.create_basin, False)}),
    (("v1", "basins", "*"), {"GET": (basins.get_basin_config, False),
                             "PUT": (basins.ensure_basin, False),
                             "PATCH": (basins.reconfigure_basin, False),
                             "DELETE": (basins.delete_basin, False)}),
    (("v1", "streams"), {"GET": (streams.list_streams, False),
                         "POST": (streams.create_stream, False)}),
    (("v1", "streams", "*"), {"GET": (streams.get_stream_config, False),
                              "PUT": (streams.ensure_stream, False),
                              "PATCH": (streams.reconfigure_stream, False),
                              "DELETE": (streams.delete_stream, False)}),
    (("v1", "streams", "*", "records"), {"GET": (records.read, True),
                                         "POST": (records.append, True)}),
    (("v1", "streams", "*", "records", "tail"), {"GET": (records.check_tail, False)}),
]
_NOT_OFFERED = ("access-tokens", "metrics", "locations")


def _match(segments: list[str]) -> tuple[dict[str, tuple[Handler, bool]], list[str], str] | None:
    for pattern, methods in _ROUTES:
        if len(pattern) != len(segments):
            continue
        args = []
        for want, got in zip(pattern, segments):
            if want == "*":
                args.append(got)
            elif want != got:
                break
        else:
            return methods, args, "/" + "/".join(pattern)
    return None


class S2App:
    """The ASGI application (HTTP only; lifespan events are acknowledged)."""

    def __init__(self, api: Api, auth_tokens: list[str] | None) -> None:
        self.api = api
        self._tokens = [t.encode() for t in auth_tokens or []]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        route = "unmatched"
        req = None
        try:
            req = Request(scope, receive, self.api.settings.max_body_bytes)
            route, resp = await self._dispatch(req, send)
        except HttpError as err:  # refused before any handler ran (URL, route, auth)
            resp = Response.error(err)
        if isinstance(resp, Response):
            if req is not None:
                await req.discard_rest()
            await resp.send(send)
        self.api.metrics.observe(scope["method"], route, resp.status,
                                 time.perf_counter() - started)

    async def _dispatch(self, req: Request, send: Send) -> tuple[str, Response | StreamingResponse]:
        segs = req.segments
        if segs == ["health"]:
            return "/health", Response(200, b"ok\n", "text/plain")
        if segs == ["metrics"]:
            return "/metrics", Response(200, self.api.metrics.exposition(), METRICS_CONTENT_TYPE)
        found = _match(segs)
        if found is None:
            if len(segs) >= 2 and segs[0] == "v1" and segs[1] in _NOT_OFFERED:
                self._authorize(req)
                raise HttpError(501, "not_implemented",
                                f"/v1/{segs[1]} is not offered by this server")
            raise HttpError(404, "not_found", f"no such resource: {req.raw_path.decode('latin-1')}")
        methods, args, route = found
        if req.method not in methods:
            raise HttpError(405, "method_not_allowed", f"{req.method} is not allowed here",
                            headers=(("allow", ", ".join(methods)),))
        self._authorize(req)
        handler, wants_send = methods[req.method]
        try:
            if wants_send:
                return route, await handler(self.api, req, send, *args)
            return route, await handler(self.api, req, *args)
        except HttpError as err:
            # carry the route to the metrics even on errors
            resp = Response.error(err)
        except Exception as exc:
            err = from_store_error(exc)
            if err.status >= 500:
                log.warning("%s %s failed", req.method, route, exc_info=exc)
            resp = Response.error(err)
        return route, resp

    def drain(self) -> None:
        """Shutting down: end every session now, telling clients to reconnect."""
        self.api.draining.set()

    def _authorize(self, req: Request) -> None:
        if not self._tokens:
            return
        header = req.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(401, "permission_denied", "a bearer access token is required",
                            headers=(("www-authenticate", "Bearer"),))
        given = token.strip().encode()
        # compare against every token so the time taken does not tell which one is close
        ok = False
        for t in self._tokens:
            ok |= hmac.compare_digest(given, t)
        if not ok:
            raise HttpError(403, "permission_denied", "invalid access token")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(store: StreamStore, auth_tokens: list[str] | None = None,
               kafka_view: KafkaView | None = None,
               settings: Settings | None = None) -> S2App:
    """The ASGI app serving S2's REST API over `store`.

    `auth_tokens`: None or empty turns auth off. `kafka_view`: see context.KafkaView.
    """
    return S2App(Api(store, settings or Settings(), kafka_view), auth_tokens)
