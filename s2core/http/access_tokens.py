"""Handlers of /v1/access-tokens: list, issue, revoke (see tokens.py)."""
from __future__ import annotations

from s2core.http.asgi import Request, Response
from s2core.http.basins import list_params
from s2core.http.context import Api
from s2core.http.tokens import principal_of


async def list_tokens(api: Api, req: Request) -> Response:
    prefix, start_after, limit = list_params(req)
    infos, more = await api.tokens.list(principal_of(req), prefix, start_after, limit)
    return Response.json({"access_tokens": infos, "has_more": more})


async def issue_token(api: Api, req: Request) -> Response:
    token = await api.tokens.issue(principal_of(req), await req.json())
    return Response.json({"access_token": token}, 201)


async def revoke_token(api: Api, req: Request, token_id: str) -> Response:
    await api.tokens.revoke(principal_of(req), token_id)
    return Response(204)
