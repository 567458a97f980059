"""Reads of idle streams keep at most `idle_read_cache` of them loaded (LRU)."""
import pytest

from s2core.records import AppendRecord

B = "test-basin"


@pytest.fixture
def env(env):
    env.cfg["keep_in_memory_fraction"] = 0.0  # offloaded streams become idle at once
    env.cfg["idle_read_cache"] = 5
    return env


async def settle(store) -> None:
    ch = store.channels["ch0"]
    while await ch.offloader.offload_once():
        pass
    await ch.offloader.evict()


async def test_reading_many_idle_streams_keeps_few_loaded(env):
    store = await env.open()
    ch = store.channels["ch0"]
    names = [f"s-{i:02d}" for i in range(40)]
    for n in names:
        await store.create_stream(B, n)
        await store.append(B, n, [AppendRecord(n.encode())])
    await settle(store)
    assert not ch.streams, "offloaded, idle streams leave memory"
    for n in names:
        batch = await store.read(B, n, seq_num=0)
        assert [r.body for r in batch.records] == [n.encode()]
        assert (await store.check_tail(B, n)).seq_num == 1
    assert len(ch.streams) <= 5, "only the most recently read idle streams stay loaded"
    assert set(ch.streams) <= {(await store._handle(B, n)).uid for n in names[-5:]}
    # an evicted stream reloads from its checkpoint and takes appends as before
    ack = await store.append(B, names[0], [AppendRecord(b"again")])
    assert ack.start.seq_num == 1
    assert [r.body for r in (await store.read(B, names[0], seq_num=0)).records] == \
        [names[0].encode(), b"again"]
