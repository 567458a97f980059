"""Handlers of /v1/basins: list, create, ensure, get config, reconfigure, delete."""
from __future__ import annotations

from typing import Any

from s2core.errors import AlreadyExists, BasinNotFound
from s2core.http import jsoncodec as jc
from s2core.http.asgi import Request, Response
from s2core.http.context import Api
from s2core.http.errors import bad_request, invalid
from s2core.http.tokens import narrow, principal_of


def list_params(req: Request) -> tuple[str, str, int]:
    """prefix, start_after and limit (0 or absent: 1000; capped at 1000) of a listing."""
    q = req.query
    unknown = set(q) - {"prefix", "start_after", "limit"}
    if unknown:
        raise bad_request("bad_query", f"unknown query parameter(s): {sorted(unknown)}")
    prefix, start_after = q.get("prefix", ""), q.get("start_after", "")
    raw = q.get("limit", "1000")
    if not raw.isdigit():
        raise bad_request("bad_query", "limit must be a non-negative integer")
    limit = min(int(raw), 1000) or 1000
    if start_after and prefix and start_after < prefix:
        raise invalid("start_after must be greater than or equal to prefix")
    return prefix, start_after, limit


def _check_location(api: Api, obj: dict) -> None:
    loc = obj.get("location")
    if loc is not None and loc != api.settings.location:
        raise invalid(f"unknown location {loc!r}; this server offers {api.settings.location!r}")
    # `scope` is the OpenAPI copy's older name for the region; there is only one here.


def check_basin_config(value: Any) -> dict | None:
    cfg = jc.check_config_object(value, "config")
    if cfg and cfg.get("stream_cipher") is not None:
        raise invalid("stream encryption is not supported by this server")
    return cfg


async def _info(api: Api, name: str) -> dict:
    infos, _ = await api.store.list_basins(prefix=name, limit=1)
    if not infos or infos[0].name != name:
        raise BasinNotFound(f"basin {name!r} does not exist")
    return jc.basin_info(name, infos[0].created_at_ms, api.settings.location)


async def list_basins(api: Api, req: Request) -> Response:
    prefix, start_after, limit = list_params(req)
    scope = principal_of(req).basins
    prefix = narrow(scope, prefix)
    if prefix is None:  # the access token's scope has none of them
        return Response.json({"basins": [], "has_more": False})
    infos, more = await api.store.list_basins(prefix, start_after, limit)
    infos = [b for b in infos if scope.matches(b.name)]
    return Response.json({
        "basins": [jc.basin_info(b.name, b.created_at_ms, api.settings.location)
                   for b in infos],
        "has_more": more,
    })


async def create_basin(api: Api, req: Request) -> Response:
    body = await req.json()
    obj = jc.check_object(body, "CreateBasinRequest", {"basin", "config", "location", "scope"},
                           ("basin",))
    if not isinstance(obj["basin"], str):
        raise bad_request("bad_json", "basin must be a string")
    principal_of(req).check("create-basin", obj["basin"])
    token = req.headers.get("s2-request-token")
    replay = api.replay("basin", token, obj)
    if replay is not None:
        return replay
    _check_location(api, obj)
    cfg = check_basin_config(obj.get("config"))
    info = await api.store.create_basin(obj["basin"], cfg)
    resp = Response.json(jc.basin_info(info.name, info.created_at_ms, api.settings.location),
                         201)
    api.remember("basin", token, obj, resp)
    return resp


async def ensure_basin(api: Api, req: Request, name: str) -> Response:
    name = api.basin_name(name)
    body = await req.json()
    obj = {} if body is None else jc.check_object(
        body, "EnsureBasinRequest", {"config", "location", "scope"})
    _check_location(api, obj)
    cfg = check_basin_config(obj.get("config"))
    try:
        await api.store.create_basin(name, cfg)
        result, status = "created", 201
    except AlreadyExists:
        current = await api.store.get_basin_config(name)
        if cfg and current.merged(cfg).to_json() != current.to_json():
            await api.store.reconfigure_basin(name, cfg)
            result, status = "updated", 200
        else:
            result, status = "noop", 200
    return Response.json(await _info(api, name), status, (("s2-provision-result", result),))


async def get_basin_config(api: Api, req: Request, name: str) -> Response:
    cfg = await api.store.get_basin_config(api.basin_name(name))
    return Response.json(cfg.to_json())


async def reconfigure_basin(api: Api, req: Request, name: str) -> Response:
    name = api.basin_name(name)
    patch = check_basin_config(await req.json()) or {}
    cfg = await api.store.reconfigure_basin(name, patch)
    return Response.json(cfg.to_json())


async def delete_basin(api: Api, req: Request, name: str) -> Response:
    await api.store.delete_basin(api.basin_name(name))
    return Response(202)
