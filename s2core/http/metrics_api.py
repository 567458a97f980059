"""Handlers of /v1/metrics: account, basin and stream usage metrics (see usage.py)."""
from __future__ import annotations

import time

from s2core.http.asgi import Request, Response
from s2core.http.context import Api
from s2core.http.errors import invalid
from s2core.http.usage import (
    ACCOUNT,
    ACCOUNT_OPS,
    BASIN_OPS,
    HOUR,
    MINUTE,
    accumulation,
    gauge,
    label,
    time_params,
)

_ACCOUNT_SETS = ("active-basins", "account-ops")
_BASIN_SETS = ("storage", "append-ops", "read-ops", "read-throughput", "append-throughput",
               "basin-ops")
_CLASSES = ("standard", "express")


def _set(req: Request, allowed: tuple[str, ...]) -> str:
    s = req.query.get("set")
    if s not in allowed:
        raise invalid(f"set must be one of {list(allowed)}")
    return s


async def account_metrics(api: Api, req: Request) -> Response:
    which = _set(req, _ACCOUNT_SETS)
    start, end, interval = time_params(req)
    u = api.usage
    if which == "active-basins":
        return Response.json({"values": [label("active_basins",
                                               u.active_basins(start, end))]})
    return Response.json({"values": [
        accumulation(op, "operations", interval, u.series(ACCOUNT, op, start, end, interval))
        for op in ACCOUNT_OPS if op in u.names(ACCOUNT)]})


async def basin_metrics(api: Api, req: Request, basin: str) -> Response:
    which = _set(req, _BASIN_SETS)
    start, end, interval = time_params(req)
    u = api.usage
    if which == "storage":
        if "interval" in req.query and interval != "hour":
            raise invalid("basin storage is served by the hour only")
        now = int(time.time())
        hour = now - now % HOUR
        values = []
        if start <= now and end >= hour:
            values = [[hour, float(await _basin_storage(api, basin))]]
        return Response.json({"values": [gauge("storage", "bytes", values)]})

    def acc(name: str, unit: str) -> dict:
        return accumulation(name, unit, interval, u.series(basin, name, start, end, interval))
    if which == "append-ops":
        metrics = [acc(f"append_ops_{c}", "operations") for c in _CLASSES]
    elif which == "read-ops":
        metrics = [acc("read_ops_streaming", "operations"), acc("read_ops_unary", "operations")]
    elif which == "read-throughput":
        metrics = [acc("read_bytes", "bytes")]
    elif which == "append-throughput":
        metrics = [acc(f"append_bytes_{c}", "bytes") for c in _CLASSES]
    else:
        metrics = [acc(op, "operations") for op in BASIN_OPS if op in u.names(basin)]
    return Response.json({"values": metrics})


async def stream_metrics(api: Api, req: Request, basin: str, stream: str) -> Response:
    _set(req, ("storage",))
    start, end, interval = time_params(req, default_interval="minute")
    if interval != "minute":
        raise invalid("stream storage is served by the minute only")
    now = int(time.time())
    minute = now - now % MINUTE
    values = []
    if start <= now and end >= minute:
        values = [[minute, float(await api.store.storage_bytes(basin, stream))]]
    return Response.json({"values": [gauge("storage", "bytes", values)]})


async def _basin_storage(api: Api, basin: str) -> int:
    """The sum over the basin's streams, computed at most once an hour per basin."""
    now = int(time.time())
    hour = now - now % HOUR
    hit = api.storage_cache.get(basin)
    if hit is not None and hit[0] == hour:
        return hit[1]
    total = 0
    after = ""
    while True:
        try:
            infos, more = await api.store.list_streams(basin, "", after, 1000)
        except Exception:  # noqa: BLE001 - a basin that does not exist stores nothing
            return 0
        for info in infos:
            total += await api.store.storage_bytes(basin, info.name)
        if not more or not infos:
            break
        after = infos[-1].name
    api.storage_cache[basin] = (hour, total)
    return total
