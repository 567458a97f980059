"""S2 access tokens through the official s2-sdk and raw HTTP: issue, list, revoke; a token
runs only the operations of its scope, on the basins and streams of its scope; it cannot
issue a wider token; auto_prefix_streams namespaces stream names; expired and revoked
tokens are refused."""
from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from s2_sdk import (
    AccessTokenScope,
    AppendInput,
    Operation,
    OperationGroupPermissions,
    Permission,
    Record,
    S2ServerError,
    SeqNum,
)
from s2_sdk._types import ExactMatch, PrefixMatch

ROOT = "root-secret"


@pytest.fixture
async def server(make_server):
    return await make_server(auth_tokens=[ROOT])


def status_of(exc_info) -> tuple[int, str]:
    return exc_info.value.status_code, exc_info.value.code


async def test_issue_list_revoke(server):
    async with server.sdk(ROOT) as s2:
        tok = await s2.issue_access_token("svc/reader", scope=AccessTokenScope(
            basins=ExactMatch("test-basin"), streams=PrefixMatch("logs/"),
            op_groups=OperationGroupPermissions(stream=Permission.READ)))
        assert tok.startswith("s2t_")
        await s2.issue_access_token("user/ann", scope=AccessTokenScope(
            ops=[Operation.LIST_BASINS]), expires_at=dt.datetime.now(dt.UTC)
            + dt.timedelta(hours=1))
        with pytest.raises(S2ServerError) as e:
            await s2.issue_access_token("user/ann", scope=AccessTokenScope(
                ops=[Operation.LIST_BASINS]))
        assert status_of(e) == (409, "resource_already_exists")
        page = await s2.list_access_tokens()
        assert [t.id for t in page.items] == ["svc/reader", "user/ann"]
        reader = page.items[0]
        assert reader.scope.streams == PrefixMatch("logs/")
        assert reader.scope.op_groups.stream == Permission.READ
        assert reader.expires_at is None and page.items[1].expires_at is not None
        assert [t.id for t in (await s2.list_access_tokens(prefix="user/")).items] == [
            "user/ann"]
        page = await s2.list_access_tokens(limit=1)
        assert [t.id for t in page.items] == ["svc/reader"] and page.has_more
        await s2.revoke_access_token("user/ann")
        with pytest.raises(S2ServerError) as e:
            await s2.revoke_access_token("user/ann")
        assert status_of(e) == (404, "access_token_not_found")
        assert [t.id for t in (await s2.list_access_tokens()).items] == ["svc/reader"]


async def test_a_token_runs_only_its_scope(server):
    async with server.sdk(ROOT) as s2:
        await s2.ensure_basin("other-basin")
        basin = s2.basin("test-basin")
        for name in ("logs/a", "metrics/a"):
            await basin.create_stream(name)
            await basin.stream(name).append(AppendInput(records=[Record(body=b"x")]))
        reader = await s2.issue_access_token("reader", scope=AccessTokenScope(
            basins=ExactMatch("test-basin"), streams=PrefixMatch("logs/"),
            op_groups=OperationGroupPermissions(stream=Permission.READ),
            ops=[Operation.LIST_STREAMS]))
    async with server.sdk(reader) as s2:
        basin = s2.basin("test-basin")
        batch = await basin.stream("logs/a").read(start=SeqNum(0))
        assert [r.body for r in batch.records] == [b"x"]
        assert (await basin.stream("logs/a").check_tail()).seq_num == 1
        assert [s.name for s in (await basin.list_streams()).items] == ["logs/a"]
        for call in (lambda: basin.stream("logs/a").append(AppendInput(records=[Record(b"y")])),
                     lambda: basin.stream("metrics/a").read(start=SeqNum(0)),
                     lambda: s2.basin("other-basin").stream("logs/a").read(start=SeqNum(0)),
                     lambda: basin.create_stream("logs/b"),
                     lambda: s2.list_basins(),
                     lambda: s2.create_basin("new-basin"),
                     lambda: s2.list_access_tokens()):
            with pytest.raises(S2ServerError) as e:
                await call()
            assert status_of(e) == (403, "permission_denied")
    basins, _ = await server.store.list_basins()
    assert "new-basin" not in [b.name for b in basins]
    assert (await server.store.check_tail("test-basin", "logs/a")).seq_num == 1


async def test_trim_and_fence_need_their_own_operations(server):
    async with server.sdk(ROOT) as s2:
        await s2.basin("test-basin").create_stream("s")
        writer = await s2.issue_access_token("writer", scope=AccessTokenScope(
            basins=PrefixMatch(""), streams=PrefixMatch(""), ops=[Operation.APPEND]))
    async with httpx.AsyncClient(base_url=server.url, headers={
            "authorization": f"Bearer {writer}", "s2-basin": "test-basin"}) as http:
        r = await http.post("/v1/streams/s/records", json={"records": [{"body": "x"}]})
        assert r.status_code == 200
        trim = {"records": [{"headers": [["", "dHJpbQ=="]], "body": "AAAAAAAAAAE="}]}
        r = await http.post("/v1/streams/s/records", json=trim,
                            headers={"s2-format": "base64"})
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
        assert (await server.store.check_tail("test-basin", "s")).seq_num == 1
        async with server.sdk(ROOT) as s2:
            trimmer = await s2.issue_access_token("trimmer", scope=AccessTokenScope(
                basins=PrefixMatch(""), streams=PrefixMatch(""),
                ops=[Operation.APPEND, Operation.TRIM]))
        r = await http.post("/v1/streams/s/records", json=trim, headers={
            "s2-format": "base64", "authorization": f"Bearer {trimmer}"})
        assert r.status_code == 200


async def test_no_escalation_and_bad_infos(server):
    async with server.sdk(ROOT) as s2:
        parent = await s2.issue_access_token("parent", scope=AccessTokenScope(
            basins=PrefixMatch("team-"), access_tokens=PrefixMatch("child-"),
            op_groups=OperationGroupPermissions(account=Permission.READ_WRITE)),
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    async with httpx.AsyncClient(base_url=server.url,
                                 headers={"authorization": f"Bearer {parent}"}) as http:
        async def issue(info):
            return await http.post("/v1/access-tokens", json=info)

        ok = await issue({"id": "child-1", "scope": {"basins": {"prefix": "team-a"},
                                                     "ops": ["create-basin"]}})
        assert ok.status_code == 201
        child = await http.get("/v1/access-tokens")
        (info,) = child.json()["access_tokens"]
        assert info["expires_at"] is not None, "a child expires with its parent by default"
        for bad, why in (
                ({"id": "child-2", "scope": {"basins": {"prefix": ""}, "ops": ["list-basins"]}},
                 "wider basins"),
                ({"id": "child-2", "scope": {"ops": ["read"]}}, "an op the parent lacks"),
                ({"id": "other", "scope": {"ops": ["list-basins"]}}, "id outside its scope"),
                ({"id": "child-2", "scope": {}}, "no operation"),
                ({"id": "child-2", "scope": {"ops": ["list-basins"]},
                  "expires_at": "2000-01-01T00:00:00Z"}, "expired"),
                ({"id": "child-2", "scope": {"ops": ["list-basins"]},
                  "expires_at": "2999-01-01T00:00:00Z"}, "outlives its parent"),
                ({"id": "", "scope": {"ops": ["list-basins"]}}, "empty id"),
                ({"id": "child-" + "x" * 91, "scope": {"ops": ["list-basins"]}}, "97 bytes"),
                ({"id": "child-2", "scope": {"ops": ["dance"]}}, "unknown op"),
                ({"id": "child-2", "scope": {"basins": {"glob": "*"}, "ops": ["list-basins"]}},
                 "bad resource set"),
                ({"id": "child-2", "auto_prefix_streams": True,
                  "scope": {"ops": ["list-basins"]}}, "auto prefix without a stream prefix")):
            r = await issue(bad)
            expected = 403 if why == "id outside its scope" else 422
            assert r.status_code == expected, (why, r.status_code, r.text)
        r = await http.delete("/v1/access-tokens/parent")
        assert r.status_code == 403, "outside its access_tokens scope"
        assert (await http.delete("/v1/access-tokens/child-1")).status_code == 204


async def test_revoked_and_expired_tokens_are_refused(server):
    async with server.sdk(ROOT) as s2:
        tok = await s2.issue_access_token("short", scope=AccessTokenScope(
            ops=[Operation.LIST_BASINS], basins=PrefixMatch("")))
    async with server.sdk(tok) as s2:
        assert [b.name for b in (await s2.list_basins()).items] == ["test-basin"]
    async with server.sdk(ROOT) as s2:
        await s2.revoke_access_token("short")
    async with server.sdk(tok) as s2:
        with pytest.raises(S2ServerError) as e:
            await s2.list_basins()
        assert status_of(e) == (403, "permission_denied")
    async with httpx.AsyncClient(base_url=server.url,
                                 headers={"authorization": f"Bearer {ROOT}"}) as http:
        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
        r = await http.post("/v1/access-tokens", json={
            "id": "blink", "expires_at": soon, "scope": {"ops": ["list-basins"],
                                                         "basins": {"prefix": ""}}})
        blink = r.json()["access_token"]
    await asyncio.sleep(1.2)
    async with server.sdk(blink) as s2:
        with pytest.raises(S2ServerError) as e:
            await s2.list_basins()
        assert status_of(e) == (403, "permission_denied")


async def test_auto_prefix_streams_namespaces_names(server):
    async with server.sdk(ROOT) as s2:
        await s2.basin("test-basin").create_stream("elsewhere")
        tenant = await s2.issue_access_token("tenant", auto_prefix_streams=True,
                                             scope=AccessTokenScope(
            basins=ExactMatch("test-basin"), streams=PrefixMatch("tenant-a/"),
            op_groups=OperationGroupPermissions(basin=Permission.READ_WRITE,
                                                stream=Permission.READ_WRITE)))
    async with server.sdk(tenant) as s2:
        basin = s2.basin("test-basin")
        await basin.create_stream("orders")
        await basin.stream("orders").append(AppendInput(records=[Record(body=b"o1")]))
        assert [s.name for s in (await basin.list_streams()).items] == ["orders"]
        assert [r.body for r in (await basin.stream("orders").read(start=SeqNum(0))).records] == [b"o1"]
    names = [s.name for s in (await server.store.list_streams("test-basin"))[0]]
    assert names == ["elsewhere", "tenant-a/orders"]


async def test_without_root_tokens_issued_tokens_still_get_their_scope(make_server):
    server = await make_server()  # auth off
    async with server.sdk("anything") as s2:
        await s2.basin("test-basin").create_stream("s")
        tok = await s2.issue_access_token("ro", scope=AccessTokenScope(
            basins=PrefixMatch(""), streams=PrefixMatch(""),
            op_groups=OperationGroupPermissions(stream=Permission.READ)))
    async with server.sdk(tok) as s2:
        with pytest.raises(S2ServerError) as e:
            await s2.basin("test-basin").stream("s").append(
                AppendInput(records=[Record(body=b"x")]))
        assert status_of(e) == (403, "permission_denied")
        assert (await s2.basin("test-basin").stream("s").check_tail()).seq_num == 0
