"""Handlers of /v1/streams: list, create, ensure, get config, reconfigure, delete.

The basin comes from the `s2-basin` header or the host name (see Api.basin_of).
"""
from __future__ import annotations

import json

from s2core.errors import AlreadyExists, StreamNotFound
from s2core.http import jsoncodec as jc
from s2core.http.asgi import Request, Response
from s2core.http.basins import list_params
from s2core.http.context import Api
from s2core.http.errors import bad_request
from s2core.http.tokens import narrow, principal_of


async def _info(api: Api, basin: str, name: str, strip: str = "") -> dict:
    infos, _ = await api.store.list_streams(basin, prefix=name, limit=1)
    if not infos or infos[0].name != name:
        raise StreamNotFound(f"stream {name!r} does not exist in basin {basin!r}")
    return jc.stream_info(name[len(strip):], infos[0].created_at_ms, infos[0].deleted_at_ms)


async def list_streams(api: Api, req: Request) -> Response:
    basin = api.basin_of(req)
    prefix, start_after, limit = list_params(req)
    p = principal_of(req)
    strip = p.stream_prefix()  # (auto_prefix_streams: names are shown without it)
    listed = narrow(p.streams, strip + prefix)
    if listed is None:  # the access token's scope has none of them
        return Response.json({"streams": [], "has_more": False})
    after = strip + start_after if start_after else ""
    infos, more = await api.store.list_streams(basin, listed, after, limit)
    return Response.json({
        "streams": [jc.stream_info(s.name[len(strip):], s.created_at_ms, s.deleted_at_ms)
                    for s in infos if p.streams.matches(s.name)],
        "has_more": more,
    })


async def create_stream(api: Api, req: Request) -> Response:
    basin = api.basin_of(req)
    obj = jc.check_object(await req.json(), "CreateStreamRequest", {"stream", "config"},
                          ("stream",))
    if not isinstance(obj["stream"], str):
        raise bad_request("bad_json", "stream must be a string")
    p = principal_of(req)
    name = p.stream_prefix() + obj["stream"]
    p.check("create-stream", basin, name)
    token = req.headers.get("s2-request-token")
    replay = api.replay("stream", token, (basin, name, obj))
    if replay is not None:
        return replay
    cfg = jc.check_config_object(obj.get("config"), "config")
    info = await api.store.create_stream(basin, name, cfg)
    resp = Response.json(jc.stream_info(obj["stream"], info.created_at_ms), 201)
    api.remember("stream", token, (basin, name, obj), resp)
    return resp


async def ensure_stream(api: Api, req: Request, name: str) -> Response:
    basin = api.basin_of(req)
    name = api.stream_name(name)
    cfg = jc.check_config_object(await req.json(), "stream config")
    try:
        await api.store.create_stream(basin, name, cfg)
        result, status = "created", 201
    except AlreadyExists:
        current = await api.store.get_stream_config(basin, name)
        if cfg and current.merged(cfg).to_json() != current.to_json():
            await api.store.reconfigure_stream(basin, name, cfg)
            result, status = "updated", 200
        else:
            result, status = "noop", 200
    return Response.json(await _info(api, basin, name, principal_of(req).stream_prefix()),
                         status, (("s2-provision-result", result),))


async def get_stream_config(api: Api, req: Request, name: str) -> Response:
    cfg = await api.store.get_stream_config(api.basin_of(req), api.stream_name(name))
    return Response.json(cfg.to_json())


async def reconfigure_stream(api: Api, req: Request, name: str) -> Response:
    basin = api.basin_of(req)
    patch = jc.check_config_object(await req.json(), "stream reconfiguration") or {}
    cfg = await api.store.reconfigure_stream(basin, api.stream_name(name), patch)
    return Response.json(cfg.to_json())


async def delete_stream(api: Api, req: Request, name: str) -> Response:
    await api.store.delete_stream(api.basin_of(req), api.stream_name(name))
    return Response(202)


def stream_config_header(req: Request) -> dict | None:
    """The `s2-stream-config` header: config for a stream created by this request."""
    raw = req.headers.get("s2-stream-config")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise bad_request("bad_header", "s2-stream-config is not JSON") from None
    if not isinstance(value, dict):
        raise bad_request("bad_header", "s2-stream-config must be a JSON object")
    return value


async def create_with_header_config(api: Api, req: Request, basin: str, name: str,
                                    on: str) -> None:
    """Honor `s2-stream-config` when the basin creates streams on append/read (`on`)."""
    cfg = stream_config_header(req)
    if cfg is None:
        return
    bcfg = await api.store.get_basin_config(basin)
    if getattr(bcfg, f"create_stream_on_{on}"):
        await api.store.ensure_stream(basin, name, cfg)
