"""The whole stream store on DynamoDB metadata (a moto server, see test_metadata_dynamodb):
streams are created and appended to, an offload publishes their catalog rows and
checkpoints in one metadata batch too big for one TransactWriteItems (so through the
transaction-record protocol), the store restarts and every record reads back."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_metadata_dynamodb import dynamodb_endpoint, fresh_table  # noqa: F401 - fixture

from s2core.config import load_config
from s2core.metadata import list_all
from s2core.metadata.dynamodb import DynamoMetadataStore
from s2core.records import AppendRecord
from s2core.server import close_store, open_store

STREAMS = 60


async def test_stream_store_on_dynamodb_metadata(
        dynamodb_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # botocore's usual credential chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    table = fresh_table()
    cfg = load_config(None, env={}, overrides={
        "server.data_dir": str(tmp_path),
        "metadata.url": f"dynamodb://{table}?region=us-east-1&endpoint_url={dynamodb_endpoint}",
        "tail.offload_interval_s": 0.05, "tail.offload_min_stream_bytes": 0,
        "tail.keep_in_memory_fraction": 0.01})
    basin = cfg["server"]["default_basin"]
    names = [f"s{i:02d}" for i in range(STREAMS)]
    bodies = {name: [b"%s-%d" % (name.encode(), j) for j in range(3)] for name in names}

    store = await open_store(cfg)
    metadata = store.metadata.inner  # (inside the settling wrapper)
    assert isinstance(metadata, DynamoMetadataStore)
    steps: list[str] = []
    metadata.txn.step_hook = lambda step, txid: steps.append(step)
    for name in names:
        await store.create_stream(basin, name, {"retention_policy": {"infinite": {}}})

    async def append_in_order(name: str) -> None:
        for body in bodies[name]:
            await store.append(basin, name, [AppendRecord(body)])

    await asyncio.gather(*(append_in_order(name) for name in names))
    deadline = time.monotonic() + 20
    while len(await list_all(metadata, "seg/")) < STREAMS:  # every stream offloaded
        assert time.monotonic() < deadline, "no offload published the streams' sections"
        await asyncio.sleep(0.05)
    assert "committed" in steps, "the offload's batch went through the big-batch protocol"
    await close_store(store)

    store = await open_store(cfg)
    for name in names:
        batch = await store.read(basin, name, seq_num=0, count=100)
        assert [r.body for r in batch.records] == bodies[name]
    ack = await store.append(basin, names[0], [AppendRecord(b"after")])
    assert ack.start.seq_num == 3
    await close_store(store)
