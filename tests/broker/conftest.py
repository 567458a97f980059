"""A Broker on in-memory stores, started and, at the end of the test, stopped."""
from __future__ import annotations

import pytest

from broker.kafka import Broker, BrokerConfig
from s2core.channel import ChannelConfig
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.store import ChannelSpec, StreamStore


@pytest.fixture
async def memory_broker():
    """`await memory_broker(replicas=1, channel=ChannelConfig(), **BrokerConfig fields)`:
    a started Broker (basin "test-basin", write quorum of 2 with 3 replicas, else 1)."""
    made = []

    async def make(replicas: int = 1, channel: ChannelConfig | None = None,
                   **config) -> Broker:
        store = await StreamStore.open(MemoryMetadataStore(), MemoryObjectStore("segments"), [
            ChannelSpec("ch0", [MemoryObjectStore(f"r{i}") for i in range(replicas)],
                        min(replicas, 2), channel or ChannelConfig())])
        b = Broker(store, BrokerConfig(**{"basin": "test-basin", **config}))
        await b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.stop()
        await b.store.close()
