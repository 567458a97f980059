import pytest

from s2core.channel import ChannelConfig
from s2core.metadata.memory import MemoryMetadataStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.store import ChannelSpec, StreamStore


class Env:
    """Memory backends that survive a store being closed and reopened (a 'restart')."""

    def __init__(self, **cfg):
        self.metadata = MemoryMetadataStore()
        self.segments = MemoryObjectStore("segments")
        self.replicas = [MemoryObjectStore(f"r{i}") for i in range(3)]
        self.cfg = dict(offload_target_bytes=4096, offload_interval_s=0.02)
        self.cfg.update(cfg)
        self.extra_channels = []
        self.extra_replicas = {}

    def specs(self):
        specs = [ChannelSpec("ch0", self.replicas, 2, ChannelConfig(**self.cfg))]
        for name in self.extra_channels:
            reps = self.extra_replicas.setdefault(
                name, [MemoryObjectStore(f"{name}-r{i}") for i in range(3)])
            specs.append(ChannelSpec(name, reps, 2, ChannelConfig(**self.cfg)))
        return specs

    async def open(self, **kw) -> StreamStore:
        store = await StreamStore.open(self.metadata, self.segments, self.specs(), **kw)
        await store.ensure_basin("test-basin")
        return store


@pytest.fixture
def env():
    return Env()


@pytest.fixture
async def store(env):
    s = await env.open()
    yield s
    await s.close()
