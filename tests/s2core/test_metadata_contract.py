"""One contract, every MetadataStore: memory and SQLite (both commit modes) here;
test_metadata_postgres.py runs it on PostgreSQL."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2core.errors import Closed, InvalidArgument
from s2core.metadata import MetadataStore, Op, Versioned, VersionMismatch, open_metadata_store
from s2core.metadata.memory import MemoryMetadataStore
from s2core.metadata.rules import prefix_end
from s2core.metadata.sqlite import SqliteMetadataStore


@pytest.fixture(params=["memory", "sqlite-full-thread", "sqlite-normal-inline"])
async def store(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
                ) -> AsyncIterator[MetadataStore]:
    if request.param == "memory":
        s: MetadataStore = MemoryMetadataStore()
    elif request.param == "sqlite-full-thread":
        s = SqliteMetadataStore(os.path.join(tmp_path, "m.db"))
    else:
        s = SqliteMetadataStore(os.path.join(tmp_path, "m.db"), synchronous="NORMAL")
    yield s
    await s.close()


async def test_create_get(store: MetadataStore) -> None:
    assert await store.get("k") is None
    assert await store.create("k", b"v1") == 1
    assert await store.get("k") == Versioned(b"v1", 1)
    with pytest.raises(VersionMismatch) as e:
        await store.create("k", b"again")
    assert (e.value.expected, e.value.actual) == (None, 1)
    assert await store.get("k") == Versioned(b"v1", 1)


async def test_put_if_version(store: MetadataStore) -> None:
    await store.create("k", b"a")
    assert await store.put("k", b"b", 1) == 2
    with pytest.raises(VersionMismatch) as e:
        await store.put("k", b"c", 1)
    assert (e.value.expected, e.value.actual) == (1, 2)
    assert await store.get("k") == Versioned(b"b", 2)
    with pytest.raises(VersionMismatch) as e:
        await store.put("absent", b"x", 1)
    assert e.value.actual is None
    assert await store.get("absent") is None


async def test_put_version_zero_is_unconditional(store: MetadataStore) -> None:
    assert await store.put("k", b"a", 0) == 1
    assert await store.put("k", b"b", 0) == 2
    assert await store.get("k") == Versioned(b"b", 2)


async def test_delete(store: MetadataStore) -> None:
    assert await store.delete("k") is False
    await store.create("k", b"a")
    await store.put("k", b"b", 1)
    with pytest.raises(VersionMismatch):
        await store.delete("k", expected_version=1)
    assert await store.get("k") == Versioned(b"b", 2)
    assert await store.delete("k", expected_version=2) is True
    assert await store.get("k") is None
    with pytest.raises(VersionMismatch):
        await store.delete("k", expected_version=2)
    assert await store.create("k", b"again") == 1  # versions restart after a delete


async def test_values_are_bytes(store: MetadataStore) -> None:
    await store.create("b", bytearray(b"\x00\xffbin"))  # type: ignore[arg-type]
    got = await store.get("b")
    assert got is not None and got.value == b"\x00\xffbin" and isinstance(got.value, bytes)
    with pytest.raises(InvalidArgument):
        await store.create("s", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await store.create("", b"empty key")


async def test_write_batch_all_or_nothing(store: MetadataStore) -> None:
    await store.create("a", b"a1")
    await store.create("gone", b"x")
    versions = await store.write_batch([
        Op("put", "a", b"a2", 1),
        Op("put", "new", b"n1"),
        Op("delete", "gone"),
        Op("put", "any", b"y", 0),
    ])
    assert versions == [2, 1, 0, 1]
    assert await store.get("a") == Versioned(b"a2", 2)
    assert await store.get("new") == Versioned(b"n1", 1)
    assert await store.get("gone") is None
    with pytest.raises(VersionMismatch) as e:
        await store.write_batch([
            Op("put", "a", b"a3", 2),
            Op("delete", "new", expected_version=7),
        ])
    assert e.value.key == "new"
    assert await store.get("a") == Versioned(b"a2", 2)  # the first op was undone
    assert await store.get("new") == Versioned(b"n1", 1)
    assert await store.write_batch([]) == []


async def test_big_write_batch_all_or_nothing(store: MetadataStore) -> None:
    """Batches of thousands of ops (an offload of 10,000 streams) take the same rules."""
    for i in range(600):
        await store.put(f"ckpt/{i:04d}", b"v1", 0)
    ops = [Op("put", f"ckpt/{i:04d}", b"v2", 1) for i in range(600)]          # updates
    ops += [Op("put", f"seg/{i:04d}", b"row") for i in range(1200)]            # inserts
    ops += [Op("delete", f"ckpt/{i:04d}") for i in range(600, 610)]            # absent
    ops += [Op("put", "obj/x", bytearray(b"live"), 0)]                         # upsert
    versions = await store.write_batch(ops)
    assert versions == [2] * 600 + [1] * 1200 + [0] * 10 + [1]
    assert await store.get("ckpt/0599") == Versioned(b"v2", 2)
    assert await store.get("seg/1199") == Versioned(b"row", 1)
    assert await store.get("obj/x") == Versioned(b"live", 1)
    bad = [Op("put", f"ckpt/{i:04d}", b"v3", 2) for i in range(600)]
    bad += [Op("delete", "seg/0000"), Op("put", "fresh", b"f")]
    bad += [Op("put", "seg/0005", b"again")]  # create-if-absent of a present key
    with pytest.raises(VersionMismatch) as e:
        await store.write_batch(bad)
    assert e.value.key == "seg/0005"
    assert await store.get("ckpt/0000") == Versioned(b"v2", 2)  # nothing applied
    assert await store.get("seg/0000") == Versioned(b"row", 1)
    assert await store.get("fresh") is None
    with pytest.raises(InvalidArgument):
        await store.write_batch([Op("put", f"k{i}", b"x") for i in range(40)]
                                + [Op("put", "k3", b"twice", 0)])
    assert await store.get("k0") is None


async def test_big_write_batch_keeps_any_bytes(store: MetadataStore) -> None:
    """Text, JSON, NUL bytes and invalid UTF-8 come back byte for byte from big batches
    (the first thousand values are all text, the rest mixed)."""
    text = [b'{"next": 7, "tok": "\\u00e9\\"q"}', "caf\u00e9 \U0001f600".encode(), b"",
            b"\\x00 \n\t\"'"]
    kinds = text + [b"nul\x00inside", b"\xff\xfe not utf-8"]

    def value(i: int, gen: int) -> bytes:
        return (text[(i + gen) % 4] if i < 1000 else kinds[(i + gen) % 6]) * (1 + i % 3)

    ops = [Op("put", f"b/{i:05d}", value(i, 0)) for i in range(2500)]
    assert await store.write_batch(ops) == [1] * 2500
    again = [Op("put", f"b/{i:05d}", value(i, 1), 1) for i in range(2500)]
    assert await store.write_batch(again) == [2] * 2500
    for i in (0, 1, 2, 3, 999, 1000, 1001, 1002, 1003, 1004, 1005, 2499):
        assert await store.get(f"b/{i:05d}") == Versioned(value(i, 1), 2)
    rows = await store.list_prefix("b/", limit=10)
    assert [v.value for _, v in rows] == [value(i, 1) for i in range(10)]


async def test_write_batch_rejects_bad_ops(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgument):
        await store.write_batch([Op("put", "x", b"1"), Op("put", "x", b"2", 0)])
    with pytest.raises(InvalidArgument):
        await store.write_batch([Op("upsert", "x", b"1")])
    with pytest.raises(InvalidArgument):
        await store.write_batch([Op("put", "x", None)])
    assert await store.get("x") is None


async def test_list_prefix(store: MetadataStore) -> None:
    keys = ["s/a", "s/b", "s/c", "s/c/1", "s0", "r", "s", "t/x", "s%", "s_", "s/%", "s/_"]
    for k in keys:
        await store.create(k, k.encode())
    listed = await store.list_prefix("s/")
    assert [k for k, _ in listed] == sorted(k for k in keys if k.startswith("s/"))
    assert listed[0][1] == Versioned(b"s/%", 1)
    assert [k for k, _ in await store.list_prefix("s%")] == ["s%"]  # not a wildcard
    assert [k for k, _ in await store.list_prefix("s_")] == ["s_"]
    assert [k for k, _ in await store.list_prefix("")] == sorted(keys)
    assert await store.list_prefix("nothing") == []


async def test_list_prefix_pages(store: MetadataStore) -> None:
    keys = [f"p/{i:04d}" for i in range(250)]
    await store.write_batch([Op("put", k, b"v") for k in keys])
    await store.create("q", b"outside")
    await store.create("o", b"outside")
    got: list[str] = []
    start_after = ""
    while True:
        page = await store.list_prefix("p/", start_after=start_after, limit=64)
        got.extend(k for k, _ in page)
        if len(page) < 64:
            break
        start_after = page[-1][0]
    assert got == keys
    assert [k for k, _ in await store.list_prefix("p/", start_after="p/0247")] == [
        "p/0248", "p/0249"]
    assert [k for k, _ in await store.list_prefix("p/", start_after="a", limit=2)] == [
        "p/0000", "p/0001"]
    assert await store.list_prefix("p/", start_after="p/9") == []
    assert await store.list_prefix("p/", limit=0) == []
    with pytest.raises(InvalidArgument):
        await store.list_prefix("p/", limit=-1)


async def test_list_after_deletes_and_recreates(store: MetadataStore) -> None:
    for i in range(50):
        await store.create(f"k{i:02d}", b"")
    for i in range(0, 50, 2):
        await store.delete(f"k{i:02d}")
    await store.create("k10", b"back")
    listed = [k for k, _ in await store.list_prefix("k")]
    assert listed == sorted({f"k{i:02d}" for i in range(1, 50, 2)} | {"k10"})


async def test_unicode_keys_order_like_python(store: MetadataStore) -> None:
    keys = ["a", "a\x7f", "aé", "a\u20ac", "a\uffff", "a\U0001f600", "a\U0010ffff", "b"]
    for k in keys:
        await store.create(k, b"")
    assert [k for k, _ in await store.list_prefix("")] == sorted(keys)
    assert [k for k, _ in await store.list_prefix("a\U0010ffff")] == ["a\U0010ffff"]
    assert len(await store.list_prefix("a")) == len(keys) - 1


async def test_concurrent_check_and_set_loses_nothing(store: MetadataStore) -> None:
    await store.create("counter", b"0")

    async def increment() -> None:
        while True:
            cur = await store.get("counter")
            assert cur is not None
            try:
                await store.put("counter", str(int(cur.value) + 1).encode(), cur.version)
                return
            except VersionMismatch:
                await asyncio.sleep(0)

    await asyncio.gather(*(increment() for _ in range(50)))
    assert await store.get("counter") == Versioned(b"50", 51)


async def test_concurrent_creates_one_winner(store: MetadataStore) -> None:
    results = await asyncio.gather(*(store.create("once", bytes([i])) for i in range(20)),
                                   return_exceptions=True)
    assert results.count(1) == 1
    assert all(isinstance(r, VersionMismatch) for r in results if r != 1)


async def test_closed_store_refuses(store: MetadataStore) -> None:
    await store.create("k", b"v")
    await store.close()
    with pytest.raises(Closed):
        await store.get("k")
    with pytest.raises(Closed):
        await store.create("k2", b"v")


async def test_factory(tmp_path: os.PathLike[str]) -> None:
    mem = open_metadata_store("memory://")
    assert isinstance(mem, MemoryMetadataStore)
    path = os.path.join(tmp_path, "f.db")
    lite = open_metadata_store(f"sqlite://{path}?synchronous=normal")
    assert isinstance(lite, SqliteMetadataStore) and lite.synchronous == "NORMAL"
    await lite.create("k", b"v")
    await lite.close()
    again = open_metadata_store(f"sqlite://{path}")
    assert await again.get("k") == Versioned(b"v", 1)
    await again.close()
    for bad in ("sqlite://relative.db", "postgres://x/y?table=no-such-name",
                "sqlite:///x.db?synchronous=OFF", "mysql://x/y"):
        with pytest.raises(InvalidArgument):
            open_metadata_store(bad)


@settings(max_examples=300)
@given(st.text(max_size=4), st.text(max_size=6))
def test_prefix_end_bounds_exactly_the_prefixed_keys(prefix: str, key: str) -> None:
    try:
        (prefix + key).encode()
    except UnicodeEncodeError:
        return
    end = prefix_end(prefix)
    for k in (key, prefix + key):
        in_range = k >= prefix and (end is None or k < end)
        assert in_range == k.startswith(prefix), (prefix, k, end)
