"""The ASGI app of S2's REST API over a StreamStore: routing, auth, errors, metrics.

    create_app(store, auth_tokens=None, kafka_view=None) -> ASGI app

Routes: /health, /metrics (Prometheus), /v1/basins[/{basin}], /v1/streams[/{stream}],
/v1/streams/{stream}/records[/tail], /v1/access-tokens[/{id}]. Every /v1 request runs as
the principal of its access token (tokens.py): with `auth_tokens` configured it needs
`Authorization: Bearer <token>` (401 without one, 403 with a wrong one), and a request
its token does not permit is refused (403) before it touches the store.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from s2core.http import access_tokens, basins, metrics_api, records, streams
from s2core.http.asgi import Receive, Request, Response, Scope, Send, StreamingResponse
from s2core.http.context import Api, KafkaView, Settings
from s2core.http.errors import HttpError, from_store_error
from s2core.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from s2core.http.relay import RELAYED, Relay, RelayError
from s2core.http.tokens import AccessTokens, Principal
from s2core.store import StreamStore

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Response | StreamingResponse]]

# (path pattern, {method: (handler, takes send, operation)}); "*" matches one path segment.
# The operation is S2's name of it, checked against the request's access token: on the
# basin of the path (basin routes) or on the request's basin and the path's stream.
_ROUTES: list[tuple[tuple[str, ...], dict[str, tuple[Handler, bool, str]]]] = [
    (("v1", "basins"), {"GET": (basins.list_basins, False, "list-basins"),
                        "POST": (basins.create_basin, False, "create-basin")}),
    (("v1", "basins", "*"), {"GET": (basins.get_basin_config, False, "get-basin-config"),
                             "PUT": (basins.ensure_basin, False, "create-basin"),
                             "PATCH": (basins.reconfigure_basin, False, "reconfigure-basin"),
                             "DELETE": (basins.delete_basin, False, "delete-basin")}),
    (("v1", "streams"), {"GET": (streams.list_streams, False, "list-streams"),
                         "POST": (streams.create_stream, False, "create-stream")}),
    (("v1", "streams", "*"), {"GET": (streams.get_stream_config, False, "get-stream-config"),
                              "PUT": (streams.ensure_stream, False, "create-stream"),
                              "PATCH": (streams.reconfigure_stream, False,
                                        "reconfigure-stream"),
                              "DELETE": (streams.delete_stream, False, "delete-stream")}),
    (("v1", "streams", "*", "records"), {"GET": (records.read, True, "read"),
                                         "POST": (records.append, True, "append")}),
    (("v1", "streams", "*", "records", "tail"), {"GET": (records.check_tail, False,
                                                         "check-tail")}),
    (("v1", "access-tokens"), {"GET": (access_tokens.list_tokens, False,
                                       "list-access-tokens"),
                               "POST": (access_tokens.issue_token, False,
                                        "issue-access-token")}),
    (("v1", "access-tokens", "*"), {"DELETE": (access_tokens.revoke_token, False,
                                               "revoke-access-token")}),
    (("v1", "metrics"), {"GET": (metrics_api.account_metrics, False, "account-metrics")}),
    (("v1", "metrics", "*"), {"GET": (metrics_api.basin_metrics, False, "basin-metrics")}),
    (("v1", "metrics", "*", "*"), {"GET": (metrics_api.stream_metrics, False,
                                           "stream-metrics")}),
]
_NOT_OFFERED = ("locations",)


def _match(segments: list[str]
           ) -> tuple[dict[str, tuple[Handler, bool, str]], list[str], str] | None:
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

    def __init__(self, api: Api) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
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
                await self._authorize(req)
                raise HttpError(501, "not_implemented",
                                f"/v1/{segs[1]} is not offered by this server")
            raise HttpError(404, "not_found", f"no such resource: {req.raw_path.decode('latin-1')}")
        methods, args, route = found
        if req.method not in methods:
            raise HttpError(405, "method_not_allowed", f"{req.method} is not allowed here",
                            headers=(("allow", ", ".join(methods)),))
        handler, wants_send, op = methods[req.method]
        try:
            p = await self._authorize(req)
            basin = None
            if segs[1] == "basins":
                basin = args[0] if args else None
                p.check(op, basin)
            elif segs[1] == "streams":
                basin = self.api.basin_of(req)
                if args:
                    args[0] = p.stream_prefix() + args[0]
                p.check(op, basin, args[0] if args else None)
                relay = self.api.relay
                if relay is not None and args and RELAYED.decode() not in req.headers:
                    # a stream another server serves: passed on to it (its records, and
                    # changes to it, which that server's cached state must see)
                    addr = await relay.locate(basin, args[0])
                    if addr is not None:
                        try:
                            return route, StreamingResponse(
                                await relay.relay(req.scope, req._receive, send, addr))
                        except RelayError as e:
                            raise HttpError(503, "unavailable", str(e),
                                            headers=(("retry-after-ms", "100"),)) from None
            elif segs[1] == "metrics":
                if len(args) == 2:
                    args[1] = p.stream_prefix() + args[1]
                p.check(op, *args)
            if wants_send:
                resp = await handler(self.api, req, send, *args)
            else:
                resp = await handler(self.api, req, *args)
            self.api.usage.op(op, basin)
            return route, resp
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

    async def _authorize(self, req: Request) -> Principal:
        """The request's principal (401/403 if its token is refused), kept on `req`."""
        req.principal = await self.api.tokens.authenticate(req.headers.get("authorization"))
        return req.principal


    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Startup reads the saved usage counts back and starts saving them; shutdown
        saves them a last time (usage.py)."""
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.api.usage.load()
                except Exception:  # noqa: BLE001 - the metrics start afresh, no more
                    log.exception("reading the saved S2 usage counts failed")
                self.api.usage.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.api.usage.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(store: StreamStore, auth_tokens: list[str] | None = None,
               kafka_view: KafkaView | None = None,
               settings: Settings | None = None, relay: Relay | None = None) -> S2App:
    """The ASGI app serving S2's REST API over `store`.

    `auth_tokens`: root access tokens (None or empty turns auth off: see tokens.py).
`kafka_view`: see context.KafkaView. `relay`: passes requests for the records of streams
    another server serves on to it (several brokers sharing one store: relay.py).
    """
    api = Api(store, settings or Settings(), kafka_view,
              AccessTokens(store.metadata, auth_tokens))
    api.relay = relay
    return S2App(api)
