"""FaultyObjectStore: each fault does what it says, and a seed replays the same faults."""
from __future__ import annotations

import asyncio
import random

import pytest

from s2core.errors import Indeterminate, InvalidArgument, Unavailable
from s2core.objstore import ObjectExists, ObjectNotFound
from s2core.objstore.memory import MemoryObjectStore
from s2core.testing import FaultyObjectStore, run_virtual


def faulty(seed: int = 7, **faults: object) -> tuple[MemoryObjectStore, FaultyObjectStore]:
    inner = MemoryObjectStore("inner")
    return inner, FaultyObjectStore(inner, random.Random(seed), **faults)  # type: ignore[arg-type]


async def test_no_faults_is_transparent() -> None:
    _, store = faulty()
    await store.put("k", b"v", if_absent=True)
    with pytest.raises(ObjectExists):
        await store.put("k", b"w", if_absent=True)
    assert await store.get("k") == b"v"
    assert await store.get_range("k", 0, 1) == b"v"
    assert await store.list() == ["k"]
    await store.delete("k")
    with pytest.raises(ObjectNotFound):
        await store.get("k")
    assert store.name == "faulty(inner)"
    assert not store.injected


async def test_fail_before_applies_nothing() -> None:
    inner, store = faulty(fail_before=1.0)
    for i in range(10):
        with pytest.raises(Unavailable):
            await store.put(f"k{i}", b"v")
    with pytest.raises(Unavailable):
        await store.get("k0")
    assert await inner.list() == []
    assert store.injected["fail_before"] == 11


async def test_lose_response_applies_then_is_indeterminate() -> None:
    inner, store = faulty(lose_response=1.0)
    with pytest.raises(Indeterminate):
        await store.put("k", b"v")
    assert await inner.get("k") == b"v"
    with pytest.raises(Indeterminate):  # even a definite answer can be lost
        await store.put("k", b"w", if_absent=True)
    with pytest.raises(Indeterminate):
        await store.delete("k")
    assert await inner.list() == []
    with pytest.raises(Unavailable):  # a read has no effect: its loss is definite
        await store.list()
    assert store.injected["lose_response"] == 4


async def test_fault_rates_roughly_match() -> None:
    inner, store = faulty(fail_before=0.2, lose_response=0.1)
    outcomes = {"ok": 0, "unavailable": 0, "indeterminate": 0}
    for i in range(2000):
        try:
            await store.put(f"k{i}", b"v")
            outcomes["ok"] += 1
        except Unavailable:
            outcomes["unavailable"] += 1
        except Indeterminate:
            outcomes["indeterminate"] += 1
    assert 300 < outcomes["unavailable"] < 500
    assert 100 < outcomes["indeterminate"] < 220
    assert len(await inner.list()) == outcomes["ok"] + outcomes["indeterminate"]


async def test_down_and_up() -> None:
    inner, store = faulty()
    await store.put("k", b"v")
    store.set_down(True)
    with pytest.raises(Unavailable):
        await store.get("k")
    with pytest.raises(Unavailable):
        await store.put("k2", b"v")
    store.set_down(False)
    assert await store.get("k") == b"v"
    assert await inner.list() == ["k"]
    assert store.injected["down"] == 2


def test_going_down_mid_flight_never_acks() -> None:
    async def main(seed: int) -> bool:
        inner, store = faulty(seed, latency=(1.0, 1.0))
        put = asyncio.create_task(store.put("k", b"v"))
        await asyncio.sleep(0.5)  # the put applies at a random point of its 1 s
        store.set_down(True)
        with pytest.raises((Indeterminate, Unavailable)) as e:
            await put
        applied = await inner.list() == ["k"]
        assert isinstance(e.value, Indeterminate) == applied
        return applied

    outcomes = {run_virtual(main(seed)) for seed in range(20)}
    assert outcomes == {True, False}


def test_latency_is_virtual_and_in_range() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        _, store = faulty(latency=(0.5, 2.0))
        took = []
        for i in range(50):
            t0 = loop.time()
            await store.put(f"k{i}", b"v")
            took.append(loop.time() - t0)
        return took

    took = run_virtual(main())
    assert all(0.5 <= t <= 2.0 + 1e-9 for t in took)
    assert max(took) - min(took) > 0.5


async def test_corrupt_flips_one_stored_byte() -> None:
    inner, store = faulty()
    await store.put("k", b"\x00" * 16)
    index = await store.corrupt("k")
    data = await inner.get("k")
    assert data[index] == 0xFF and data.count(0) == 15
    assert await store.corrupt("k", index) == index
    assert await inner.get("k") == b"\x00" * 16
    await store.put("empty", b"")
    with pytest.raises(InvalidArgument):
        await store.corrupt("empty")
    with pytest.raises(ObjectNotFound):
        await store.corrupt("absent")


async def test_corrupt_reads_leave_the_store_intact() -> None:
    inner, store = faulty(corrupt_reads=1.0)
    await store.put("k", b"abcdef")
    got = await store.get("k")
    assert got != b"abcdef" and len(got) == 6
    assert sum(a != b for a, b in zip(got, b"abcdef")) == 1
    assert await inner.get("k") == b"abcdef"
    assert await store.get_range("k", 2, 4) != b"cd"


def test_same_seed_same_faults() -> None:
    async def scenario(seed: int) -> list[str]:
        store = FaultyObjectStore(MemoryObjectStore(), random.Random(seed), fail_before=0.3,
                                  lose_response=0.2, latency=(0.0, 0.1))
        trace: list[str] = []

        async def client(c: int) -> None:
            for i in range(30):
                try:
                    await store.put(f"c{c}/{i}", b"x")
                    trace.append(f"{c}:{i}:ok")
                except (Unavailable, Indeterminate) as e:
                    trace.append(f"{c}:{i}:{type(e).__name__}")

        await asyncio.gather(*(client(c) for c in range(4)))
        trace.append(f"t={asyncio.get_running_loop().time():.9f}")
        return trace

    first = run_virtual(scenario(5))
    assert run_virtual(scenario(5)) == first
    assert run_virtual(scenario(6)) != first


def test_bad_parameters() -> None:
    with pytest.raises(InvalidArgument):
        faulty(fail_before=1.5)
    with pytest.raises(InvalidArgument):
        faulty(latency=(2.0, 1.0))


async def test_faulty_metadata_refuses_or_loses_answers() -> None:
    from s2core.metadata.memory import MemoryMetadataStore
    from s2core.testing.faults import FaultyMetadataStore

    inner = MemoryMetadataStore()
    refuse = FaultyMetadataStore(inner, random.Random(1), fail_before=1.0)
    with pytest.raises(Unavailable):
        await refuse.create("a", b"1")
    assert await inner.get("a") is None, "a refused write applies nothing"
    lose = FaultyMetadataStore(inner, random.Random(1), lose_response=1.0)
    with pytest.raises(Indeterminate):
        await lose.create("a", b"1")
    assert (await inner.get("a")).value == b"1", "a lost answer's write applied"
    assert (await lose.get("a")).value == b"1", "reads pass through"
    assert refuse.injected == lose.injected == 1
    with pytest.raises(InvalidArgument):
        FaultyMetadataStore(inner, random.Random(1), fail_before=2.0)
