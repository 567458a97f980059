"""Bearer-token auth: without a valid token nothing is touched."""
from __future__ import annotations

import httpx
import pytest
from s2_sdk import AppendInput, Record, S2ServerError


@pytest.fixture
async def secured(make_server):
    return await make_server(auth_tokens=["secret-1", "secret-2"])


async def test_valid_tokens_work(secured):
    for token in ("secret-1", "secret-2"):
        async with secured.sdk(token) as s2:
            await s2.ensure_basin("auth-basin")
            stream = s2.basin("auth-basin").stream(f"s-{token}")
            await s2.basin("auth-basin").create_stream(stream.name)
            ack = await stream.append(AppendInput(records=[Record(body=b"x")]))
            assert ack.end.seq_num == 1


async def test_wrong_token_is_403_and_touches_nothing(secured):
    async with secured.sdk("secret-3") as s2:
        with pytest.raises(S2ServerError) as exc:
            await s2.create_basin("evil-basin")
        assert exc.value.status_code == 403 and exc.value.code == "permission_denied"
        with pytest.raises(S2ServerError) as exc:
            await s2.basin("test-basin").stream("s").append(
                AppendInput(records=[Record(body=b"x")]))
        assert exc.value.status_code == 403
    basins, _ = await secured.store.list_basins()
    assert [b.name for b in basins] == ["test-basin"]


async def test_missing_token_is_401(secured):
    async with httpx.AsyncClient(base_url=secured.url) as http:
        for method, path in (("GET", "/v1/basins"), ("POST", "/v1/basins"),
                             ("GET", "/v1/streams/s/records"), ("DELETE", "/v1/basins/x")):
            r = await http.request(method, path, headers={"s2-basin": "test-basin"})
            assert r.status_code == 401, (method, path)
            assert r.json()["code"] == "permission_denied"
            assert r.headers["www-authenticate"] == "Bearer"
        r = await http.get("/v1/basins", headers={"authorization": "Basic c2VjcmV0LTE="})
        assert r.status_code == 401
        # health and metrics stay open for probes and scrapers
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        r = await http.get("/v1/basins", headers={"authorization": "Bearer secret-1"})
        assert r.status_code == 200
