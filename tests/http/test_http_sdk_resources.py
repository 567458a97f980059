"""Basins and streams through the official s2-sdk client."""
from __future__ import annotations

import pytest
from s2_sdk import BasinConfig, EnsureStatus, S2ServerError, StreamConfig, Timestamping
from s2_sdk import TimestampingMode as Mode

BASIN = "test-basin"


async def test_basin_lifecycle(s2):
    info = await s2.create_basin("alpha-basin", config=BasinConfig(create_stream_on_append=True))
    assert info.name == "alpha-basin" and info.location == "local"
    names = [b.name for b in (await s2.list_basins()).items]
    assert names == ["alpha-basin", BASIN]
    cfg = await s2.get_basin_config("alpha-basin")
    assert cfg.create_stream_on_append is True and cfg.create_stream_on_read is False
    cfg = await s2.reconfigure_basin("alpha-basin", config=BasinConfig(create_stream_on_read=True))
    assert cfg.create_stream_on_read is True and cfg.create_stream_on_append is True
    with pytest.raises(S2ServerError) as exc:
        await s2.create_basin("alpha-basin")
    assert exc.value.status_code == 409 and exc.value.code == "resource_already_exists"
    await s2.delete_basin("alpha-basin")
    with pytest.raises(S2ServerError) as exc:
        await s2.get_basin_config("alpha-basin")
    assert exc.value.status_code == 404 and exc.value.code == "basin_not_found"
    await s2.delete_basin("alpha-basin", ignore_not_found=True)


async def test_ensure_basin(s2):
    r = await s2.ensure_basin("beta-basin")
    assert r.status == EnsureStatus.CREATED and r.basin.name == "beta-basin"
    r = await s2.ensure_basin("beta-basin")
    assert r.status == EnsureStatus.CONFIG_UNCHANGED
    r = await s2.ensure_basin("beta-basin", config=BasinConfig(create_stream_on_read=True))
    assert r.status == EnsureStatus.CONFIG_UPDATED
    assert (await s2.get_basin_config("beta-basin")).create_stream_on_read is True


async def test_list_basins_pages(s2):
    for i in range(5):
        await s2.create_basin(f"page-basin-{i}")
    page = await s2.list_basins(prefix="page-basin-", limit=2)
    assert [b.name for b in page.items] == ["page-basin-0", "page-basin-1"] and page.has_more
    page = await s2.list_basins(prefix="page-basin-", start_after="page-basin-1", limit=10)
    assert [b.name for b in page.items] == ["page-basin-2", "page-basin-3", "page-basin-4"]
    assert not page.has_more
    assert len([b async for b in s2.list_all_basins(prefix="page-")]) == 5


async def test_stream_lifecycle(basin):
    cfg = StreamConfig(retention_policy="infinite",
                       timestamping=Timestamping(mode=Mode.CLIENT_REQUIRE, uncapped=True))
    info = await basin.create_stream("orders/eu", config=cfg)
    assert info.name == "orders/eu" and info.deleted_at is None
    await basin.create_stream("orders/us")
    page = await basin.list_streams(prefix="orders/")
    assert [s.name for s in page.items] == ["orders/eu", "orders/us"]
    got = await basin.get_stream_config("orders/eu")
    assert got.retention_policy == "infinite" and got.timestamping.mode == Mode.CLIENT_REQUIRE
    got = await basin.reconfigure_stream("orders/eu", config=StreamConfig(retention_policy=3600))
    assert got.retention_policy == 3600 and got.timestamping.uncapped is True
    with pytest.raises(S2ServerError) as exc:
        await basin.create_stream("orders/eu")
    assert exc.value.status_code == 409
    await basin.delete_stream("orders/eu")
    with pytest.raises(S2ServerError) as exc:
        await basin.get_stream_config("orders/eu")
    assert exc.value.status_code == 404 and exc.value.code == "stream_not_found"
    assert [s.name for s in (await basin.list_streams()).items] == ["orders/us"]


async def test_ensure_stream(basin):
    r = await basin.ensure_stream("ens")
    assert r.status == EnsureStatus.CREATED
    r = await basin.ensure_stream("ens", config=StreamConfig(retention_policy=60))
    assert r.status == EnsureStatus.CONFIG_UPDATED
    r = await basin.ensure_stream("ens", config=StreamConfig(retention_policy=60))
    assert r.status == EnsureStatus.CONFIG_UNCHANGED


async def test_streams_of_a_missing_basin(s2):
    with pytest.raises(S2ServerError) as exc:
        await s2.basin("missing-basin").list_streams()
    assert exc.value.status_code == 404 and exc.value.code == "basin_not_found"


async def test_invalid_config_is_422(s2, basin):
    with pytest.raises(S2ServerError) as exc:
        await basin.create_stream("bad", config=StreamConfig(retention_policy=0))
    assert exc.value.status_code == 422 and exc.value.code == "invalid"


async def test_stream_names_with_special_characters(basin):
    name = "a b/c%d?e#f&g=ü"
    await basin.create_stream(name)
    assert [s.name for s in (await basin.list_streams()).items] == [name]
    stream = basin.stream(name)
    from s2_sdk import AppendInput, Record, SeqNum
    await stream.append(AppendInput(records=[Record(body=b"x")]))
    assert [r.body for r in (await stream.read(start=SeqNum(0))).records] == [b"x"]
    await basin.delete_stream(name)


async def test_endpoints_from_env(server, monkeypatch):
    from s2_sdk import S2, Endpoints, Retry
    monkeypatch.setenv("S2_ACCOUNT_ENDPOINT", server.url)
    monkeypatch.setenv("S2_BASIN_ENDPOINT", server.url)  # no {basin}: the s2-basin header
    async with S2("t", endpoints=Endpoints.from_env(), retry=Retry(max_attempts=1)) as s2:
        assert [b.name for b in (await s2.list_basins()).items] == [BASIN]
        assert (await s2.basin(BASIN).list_streams()).items == []
