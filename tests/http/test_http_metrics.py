"""S2's usage metrics (/v1/metrics) through the official s2-sdk and raw HTTP: operations,
appends, reads and bytes by basin as time series, storage gauges, S2's 422s for bad time
ranges, and the access-token scope."""
from __future__ import annotations

import time

import httpx
import pytest
from s2_sdk import (
    AccessTokenScope,
    AccountMetricSet,
    Accumulation,
    AppendInput,
    BasinMetricSet,
    Gauge,
    Label,
    MetricUnit,
    Operation,
    Record,
    S2ServerError,
    SeqNum,
    StreamMetricSet,
    TimeseriesInterval,
)
from s2_sdk._types import ExactMatch, PrefixMatch

BASIN = "test-basin"


def window() -> tuple[int, int]:
    now = int(time.time())
    return now - 3600, now


async def test_usage_series_and_storage(server):
    async with server.sdk() as s2:
        basin = s2.basin(BASIN)
        await basin.create_stream("m")
        stream = basin.stream("m")
        for _ in range(3):
            await stream.append(AppendInput(records=[Record(body=b"x" * 100)]))
        await stream.read(start=SeqNum(0))
        await s2.list_basins()
        start, end = window()
        (active,) = await s2.account_metrics(set=AccountMetricSet.ACTIVE_BASINS, start=start,
                                             end=end)
        assert isinstance(active, Label) and active.name == "active_basins"
        assert BASIN in active.values
        ops = await s2.account_metrics(set=AccountMetricSet.ACCOUNT_OPS, start=start, end=end)
        by_name = {m.name: m for m in ops}
        assert isinstance(by_name["list-basins"], Accumulation)
        assert by_name["list-basins"].unit == MetricUnit.OPERATIONS
        assert by_name["list-basins"].interval == TimeseriesInterval.HOUR
        assert sum(v for _, v in by_name["list-basins"].values) >= 1

        appends = await s2.basin_metrics(BASIN, set=BasinMetricSet.APPEND_OPS, start=start,
                                         end=end, interval=TimeseriesInterval.MINUTE)
        counts = {m.name: sum(v for _, v in m.values) for m in appends}
        assert counts == {"append_ops_standard": 0, "append_ops_express": 3}, \
            "streams are express by default"
        assert all(m.interval == TimeseriesInterval.MINUTE for m in appends)
        (read_bytes,) = await s2.basin_metrics(BASIN, set=BasinMetricSet.READ_THROUGHPUT,
                                               start=start, end=end)
        assert read_bytes.unit == MetricUnit.BYTES and sum(v for _, v in read_bytes.values) > 0
        reads = await s2.basin_metrics(BASIN, set=BasinMetricSet.READ_OPS, start=start,
                                       end=end, interval=TimeseriesInterval.DAY)
        assert {m.name: sum(v for _, v in m.values) for m in reads} == {
            "read_ops_streaming": 0, "read_ops_unary": 1}
        nbytes = await s2.basin_metrics(BASIN, set=BasinMetricSet.APPEND_THROUGHPUT,
                                        start=start, end=end)
        assert sum(v for m in nbytes for _, v in m.values) == 3 * 108  # metered: 8 + body
        basin_ops = await s2.basin_metrics(BASIN, set=BasinMetricSet.BASIN_OPS, start=start,
                                           end=end)
        assert "create-stream" in {m.name for m in basin_ops}

        (storage,) = await s2.stream_metrics(BASIN, "m", set=StreamMetricSet.STORAGE,
                                             start=start, end=end)
        assert isinstance(storage, Gauge) and storage.unit == MetricUnit.BYTES
        assert storage.values[-1][1] == 3 * 108
        (bstorage,) = await s2.basin_metrics(BASIN, set=BasinMetricSet.STORAGE, start=start,
                                             end=end)
        assert bstorage.values[-1][1] >= 3 * 108
        # no such stream: no data, not a 404
        (none,) = await s2.stream_metrics(BASIN, "nope", set=StreamMetricSet.STORAGE,
                                          start=start, end=end)
        assert none.values[-1][1] == 0
        # long ago: nothing
        (active,) = await s2.account_metrics(set=AccountMetricSet.ACTIVE_BASINS, start=0,
                                             end=3600)
        assert active.values == []


async def test_bad_ranges_are_422(server):
    now = int(time.time())
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path, params in (
                ("/v1/metrics", {"set": "active-basins"}),
                ("/v1/metrics", {"set": "active-basins", "start": now}),
                ("/v1/metrics", {"set": "bogus", "start": now - 60, "end": now}),
                ("/v1/metrics", {"set": "active-basins", "start": now, "end": now - 3600}),
                ("/v1/metrics", {"set": "active-basins", "start": now - 60, "end": now + 600}),
                ("/v1/metrics", {"set": "active-basins", "start": now - 40 * 86400,
                                 "end": now}),
                ("/v1/metrics", {"set": "account-ops", "start": now - 60, "end": now,
                                 "interval": "week"}),
                (f"/v1/metrics/{BASIN}", {"set": "storage", "start": now - 60, "end": now,
                                          "interval": "minute"}),
                (f"/v1/metrics/{BASIN}/s", {"set": "storage", "start": now - 60, "end": now,
                                            "interval": "hour"})):
            r = await http.get(path, params=params)
            assert r.status_code == 422 and r.json()["code"] == "invalid", (path, params)


async def test_metrics_follow_the_token_scope(make_server):
    server = await make_server(auth_tokens=["root"])
    async with server.sdk("root") as s2:
        tok = await s2.issue_access_token("metrics-reader", scope=AccessTokenScope(
            basins=ExactMatch(BASIN), streams=PrefixMatch("a/"),
            ops=[Operation.BASIN_METRICS, Operation.STREAM_METRICS]))
    start, end = window()
    async with server.sdk(tok) as s2:
        await s2.basin_metrics(BASIN, set=BasinMetricSet.APPEND_OPS, start=start, end=end)
        await s2.stream_metrics(BASIN, "a/x", set=StreamMetricSet.STORAGE, start=start,
                                end=end)
        for call in (
                lambda: s2.account_metrics(set=AccountMetricSet.ACTIVE_BASINS, start=start,
                                           end=end),
                lambda: s2.basin_metrics("other-basin", set=BasinMetricSet.APPEND_OPS,
                                         start=start, end=end),
                lambda: s2.stream_metrics(BASIN, "b/x", set=StreamMetricSet.STORAGE,
                                          start=start, end=end)):
            with pytest.raises(S2ServerError) as e:
                await call()
            assert e.value.status_code == 403


async def test_usage_survives_a_restart(make_server):
    """The counts are kept in metadata: a server started on the same metadata serves the
    series the last one counted (saved at its shutdown)."""
    from s2core.metadata.memory import MemoryMetadataStore

    md = MemoryMetadataStore()
    first = await make_server(metadata=md)
    async with first.sdk() as s2:
        stream = s2.basin(BASIN).stream("kept")
        await s2.basin(BASIN).create_stream("kept")
        for _ in range(4):
            await stream.append(AppendInput(records=[Record(body=b"y" * 10)]))
    await first.stop()
    assert [k for k, _ in await md.list_prefix("usage/")]
    second = await make_server(metadata=md)
    async with second.sdk() as s2:
        start, end = window()
        appends = await s2.basin_metrics(BASIN, set=BasinMetricSet.APPEND_OPS, start=start,
                                         end=end, interval=TimeseriesInterval.MINUTE)
        assert {m.name: sum(v for _, v in m.values) for m in appends}[
            "append_ops_express"] == 4
        ops = await s2.basin_metrics(BASIN, set=BasinMetricSet.BASIN_OPS, start=start,
                                     end=end)
        assert sum(v for m in ops if m.name == "create-stream" for _, v in m.values) == 1


async def test_usage_rows_merge_and_expire() -> None:
    from s2core.http.usage import HOUR, Usage
    from s2core.metadata.memory import MemoryMetadataStore

    class Clock:
        t = 1_000_000_020.0

        def time(self):
            return self.t

    clock, md = Clock(), MemoryMetadataStore()
    a = Usage(clock, md)
    a.add("b1", "read_bytes", 10)
    await a.save()
    b = Usage(clock, md)  # another process counting the same minute
    b.add("b1", "read_bytes", 5)
    b.add("b2", "read_bytes", 1)
    await b.save()
    c = Usage(clock, md)
    await c.load()
    minute = 1_000_000_020 - 1_000_000_020 % 60
    assert c.series("b1", "read_bytes", minute, minute, "minute") == [[minute, 15.0]]
    assert c.series("b2", "read_bytes", minute, minute, "minute") == [[minute, 1.0]]
    # a save that fails keeps its counts for the next one
    real = md.create

    async def down(*a, **k):
        raise OSError("metadata unreachable")

    clock.t += 60
    c.add("b1", "read_bytes", 7)
    md.create = down
    with pytest.raises(OSError):
        await c.save()
    md.create = real
    await c.save()
    d = Usage(clock, md)
    await d.load()
    assert sum(v for _, v in d.series("b1", "read_bytes", 0, 2**40, "hour")) == 22
    # rows older than 31 days are dropped by a save
    clock.t += 32 * 24 * HOUR
    d.add("b1", "read_bytes", 1)
    await d.save()
    assert len(await md.list_prefix("usage/")) == 1
