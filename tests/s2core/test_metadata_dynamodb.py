"""DynamoMetadataStore against a DynamoDB API server (moto's, run as a process on 127.0.0.1
and an ephemeral port by moto_dynamodb_server.py): the whole shared metadata contract, the
big-batch protocol (atomicity, failures, races, a process killed at each step, readers
meanwhile), request failures, and the URL and table checks.

Without moto the tests are skipped, or fail when the CI environment variable is set.
Each test uses tables of its own.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest
import test_metadata_contract
from botocore.exceptions import ClientError, ReadTimeoutError
from test_metadata_contract import (  # noqa: F401 - the contract, run on the fixture below
    test_big_write_batch_all_or_nothing,
    test_big_write_batch_keeps_any_bytes,
    test_closed_store_refuses,
    test_concurrent_check_and_set_loses_nothing,
    test_concurrent_creates_one_winner,
    test_create_get,
    test_delete,
    test_list_after_deletes_and_recreates,
    test_list_prefix,
    test_list_prefix_pages,
    test_put_if_version,
    test_put_version_zero_is_unconditional,
    test_unicode_keys_order_like_python,
    test_values_are_bytes,
    test_write_batch_all_or_nothing,
    test_write_batch_rejects_bad_ops,
)

from s2core.errors import Indeterminate, InvalidArgument, LimitExceeded, Unavailable
from s2core.metadata import Op, Versioned, VersionMismatch, open_metadata_store
from s2core.metadata.dynamodb import DynamoMetadataStore
from s2core.metadata.dynamodb_items import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    data_key,
    lock_write,
    num,
)
from s2core.metadata.settle import SettlingMetadataStore

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test",
               "region": "us-east-1"}
STEPS_BEFORE_COMMIT = ["recorded", "locked-group", "locked"]
STEPS_AFTER_COMMIT = ["committed", "applied-group", "applied"]


def _no_moto(reason: str) -> None:
    message = f"DYNAMODB METADATA TESTS NOT RUN: {reason} (pip install 'moto[server]')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def dynamodb_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto DynamoDB API server on 127.0.0.1 and an ephemeral port, for the session."""
    log_path = tmp_path_factory.mktemp("moto-dynamodb") / "server.log"
    server = Path(__file__).with_name("moto_dynamodb_server.py")
    with open(log_path, "wb") as log:  # a file, not a pipe: the server logs every request
        try:
            proc = subprocess.Popen([sys.executable, str(server), "0"], stdout=log,
                                    stderr=subprocess.STDOUT)
        except OSError as e:
            _no_moto(f"cannot run {server.name}: {e}")
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"Running on (http://127\.0\.0\.1:\d+)",
                                      log_path.read_text(errors="replace"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                _no_moto(f"the moto server did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fresh_table() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def dynamo(endpoint: str, table: str, **opts: Any) -> DynamoMetadataStore:
    return DynamoMetadataStore(table, endpoint_url=endpoint, **{**CREDENTIALS, **opts})


@pytest.fixture
async def store(dynamodb_endpoint: str) -> AsyncIterator[DynamoMetadataStore]:
    s = dynamo(dynamodb_endpoint, fresh_table())
    yield s
    await s.close()


@pytest.fixture
async def raw(dynamodb_endpoint: str) -> AsyncIterator[Any]:
    """A plain client on the same server, to look at items as they are stored."""
    session = aioboto3.Session(aws_access_key_id="test", aws_secret_access_key="test",
                               region_name="us-east-1")
    async with session.client("dynamodb", endpoint_url=dynamodb_endpoint) as client:
        yield client


async def stored(raw: Any, table: str) -> tuple[list[dict], list[dict]]:
    """(rows, transaction record items) of `table`, as stored."""
    items: list[dict] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = await raw.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return ([i for i in items if i["pk"]["S"] == "kv"],
            [i for i in items if i["pk"]["S"] == "txn"])


async def assert_clean(raw: Any, table: str) -> None:
    """No row locked, no placeholder, no transaction record left."""
    rows, records = await stored(raw, table)
    assert records == []
    assert [r["sk"]["S"] for r in rows if "lk" in r or "ver" not in r] == []


class Killed(BaseException):
    """The process died here (BaseException: no cleanup code runs, as in a real kill)."""


def test_runs_the_whole_contract() -> None:
    """Every contract test that takes a store runs here too (a new one must be added)."""
    contract = {name for name, fn in vars(test_metadata_contract).items()
                if name.startswith("test_") and "store" in inspect.signature(fn).parameters}
    assert contract <= set(globals()), contract - set(globals())


# -- big batches -----------------------------------------------------------------------


async def test_big_batch_applies_atomically(store: DynamoMetadataStore, raw: Any) -> None:
    """1,202 ops of every kind through the protocol: all applied, nothing left behind."""
    await store.write_batch([Op("put", f"k/{i:04d}", b"v1") for i in range(300)])
    steps: list[str] = []
    store.txn.step_hook = lambda step, txid: steps.append(step)
    ops = [Op("put", f"k/{i:04d}", b"v2", 1) for i in range(200)]             # updates
    ops += [Op("delete", f"k/{i:04d}", expected_version=1) for i in range(200, 250)]
    ops += [Op("put", f"k/{i:04d}", b"any", 0) for i in range(250, 300)]      # unconditional
    ops += [Op("put", f"n/{i:04d}", b"new") for i in range(900)]              # creates
    ops += [Op("delete", "absent"), Op("put", "fresh", b"f", 0)]
    versions = await store.write_batch(ops)
    assert versions == [2] * 200 + [0] * 50 + [2] * 50 + [1] * 900 + [0, 1]
    assert steps == ["recorded"] + ["locked-group"] * 13 + ["locked", "committed"] + [
        "applied-group"] * 3 + ["applied"]  # 13 transactions of 100, applied 4 at a time
    listed = dict(await store.list_prefix(""))
    assert len(listed) == 250 + 900 + 1
    assert listed["k/0000"] == Versioned(b"v2", 2) and listed["k/0299"] == Versioned(b"any", 2)
    assert "k/0200" not in listed and "absent" not in listed
    assert listed["n/0899"] == Versioned(b"new", 1) and listed["fresh"] == Versioned(b"f", 1)
    await assert_clean(raw, store.table)


async def test_big_batch_whose_last_op_fails_applies_nothing(store: DynamoMetadataStore,
                                                              raw: Any) -> None:
    """1,001 ops whose last fails its condition: VersionMismatch for that key, and since
    the rows are read first, nothing was written at all."""
    await store.write_batch([Op("put", f"k/{i:04d}", b"v1") for i in range(200)])
    steps: list[str] = []
    store.txn.step_hook = lambda step, txid: steps.append(step)
    ops = [Op("put", f"k/{i:04d}", b"v2", 1) for i in range(200)]
    ops += [Op("put", f"n/{i:04d}", b"new") for i in range(800)]
    with pytest.raises(VersionMismatch) as e:  # caught when the rows are read: no writes
        await store.write_batch(ops + [Op("put", "k/0000x", b"y", 3)])
    assert (e.value.key, e.value.expected, e.value.actual) == ("k/0000x", 3, None)
    assert steps == []
    assert await store.get("n/0000") is None and await store.get("k/0000") == Versioned(b"v1", 1)


async def test_big_batch_losing_a_race_at_its_last_lock_applies_nothing(
        dynamodb_endpoint: str, raw: Any) -> None:
    """The last row (in batch order and key order) changes after the batch read it: every
    group but the last is locked, then the last lock fails; all is undone."""
    table = fresh_table()
    a, b = dynamo(dynamodb_endpoint, table), dynamo(dynamodb_endpoint, table)
    await a.write_batch([Op("put", f"k/{i:04d}", b"v1") for i in range(300)])
    steps: list[str] = []

    async def meddle(step: str, txid: str) -> None:
        steps.append(step)
        if step == "recorded":
            assert await b.put("k/0299", b"other", 1) == 2

    a.txn.step_hook = meddle
    with pytest.raises(VersionMismatch) as e:
        await a.write_batch([Op("put", f"k/{i:04d}", b"v2", 1) for i in range(300)])
    assert (e.value.key, e.value.expected, e.value.actual) == ("k/0299", 1, 2)
    assert steps == ["recorded"] + ["locked-group"] * 2
    rows = await a.list_prefix("k/")
    assert {v for _, v in rows[:299]} == {Versioned(b"v1", 1)}
    assert rows[299] == ("k/0299", Versioned(b"other", 2))
    await assert_clean(raw, table)
    await a.close()
    await b.close()


async def test_crossing_big_batches_one_wins_each_race(dynamodb_endpoint: str,
                                                        raw: Any) -> None:
    """Two stores run overlapping batches whose reads both happen before either locks
    (each waits at "recorded" for the other): for conditional batches exactly one wins;
    unconditional ones both apply, one after the other, as one serial order would. The
    batches list their keys in opposite orders: locked in that order, each would hold
    rows the other waits for, until lock_wait_s."""
    table = fresh_table()
    a, b = (dynamo(dynamodb_endpoint, table, lock_wait_s=5) for _ in range(2))
    keys = [f"k/{i:04d}" for i in range(250)]
    await a.write_batch([Op("put", k, b"v1") for k in keys])
    for rnd, expected in enumerate((1, 0)):
        both_recorded = [asyncio.Event(), asyncio.Event()]
        for i, s in enumerate((a, b)):
            async def rendezvous(step: str, txid: str, i: int = i,
                                 events: list[asyncio.Event] = both_recorded) -> None:
                if step == "recorded":
                    events[i].set()
                    await events[1 - i].wait()
            s.txn.step_hook = rendezvous
        before = dict(await a.list_prefix("k/"))
        ops_a = [Op("put", k, b"A%d" % rnd, expected and before[k].version)
                 for k in keys[:200]]
        ops_b = [Op("put", k, b"B%d" % rnd, expected and before[k].version)
                 for k in reversed(keys[50:])]
        results = await asyncio.gather(a.write_batch(ops_a), b.write_batch(ops_b),
                                       return_exceptions=True)
        after = dict(await a.list_prefix("k/"))
        if expected:
            lost = [r for r in results if isinstance(r, VersionMismatch)]
            assert len(lost) == 1, results
            winner = 0 if isinstance(results[1], VersionMismatch) else 1
            won = (ops_a, ops_b)[winner]
            assert all(after[op.key] == Versioned(op.value, before[op.key].version + 1)
                       for op in won)
            untouched = set(keys) - {op.key for op in won}
            assert all(after[k] == before[k] for k in untouched)
        else:
            assert not any(isinstance(r, BaseException) for r in results), results
            overlap = keys[50:200]
            assert len({after[k].value for k in overlap}) == 1, "one batch wholly after"
            assert {after[k].version for k in overlap} == {before[overlap[0]].version + 2}
            assert all(after[k].value == b"A%d" % rnd for k in keys[:50])
            assert all(after[k].value == b"B%d" % rnd for k in keys[200:])
    await assert_clean(raw, table)
    await a.close()
    await b.close()


@pytest.mark.parametrize("step", STEPS_BEFORE_COMMIT + STEPS_AFTER_COMMIT)
async def test_killed_at_each_step_leaves_a_consistent_store(
        dynamodb_endpoint: str, raw: Any, step: str) -> None:
    """A batch's process dies at `step`. Other stores then see the batch all or nothing:
    committed -> its values (a writer rolls its rows forward); not committed -> the old
    values, writers wait for the owner, then abort it once its heartbeat is stale; and
    recover() finishes what is left."""
    table = fresh_table()
    doomed = dynamo(dynamodb_endpoint, table, parallelism=1)
    keys = [f"k/{i:04d}" for i in range(103)]  # with "created" and "gone": 100 + 5 locks
    await doomed.write_batch([Op("put", k, b"old") for k in [*keys, "gone"]])
    now = dynamo(dynamodb_endpoint, table, lock_wait_s=0.1)
    later = dynamo(dynamodb_endpoint, table, clock=lambda: time.time() + 60)
    for s in (now, later):  # opened (and their recover() run) while nothing is stale
        assert await s.get("gone") == Versioned(b"old", 1)

    def die(at: str, txid: str) -> None:
        if at == step:
            raise Killed(at)

    doomed.txn.step_hook = die
    with pytest.raises(Killed):
        await doomed.write_batch([Op("put", k, b"new", 1) for k in keys]
                                 + [Op("put", "created", b"new"), Op("delete", "gone")])
    await doomed.close()
    committed = step in STEPS_AFTER_COMMIT
    all_keys = sorted([*keys, "created", "gone"])  # the lock order; groups of 100
    rows, records = await stored(raw, table)
    assert sorted(r["sk"]["S"] for r in rows if "lk" in r) == {
        "recorded": [], "locked-group": all_keys[:100], "locked": all_keys,
        "committed": all_keys, "applied-group": all_keys[100:], "applied": []}[step]
    locked = sorted(r["sk"]["S"] for r in rows if "lk" in r)
    head = [r for r in records if r["sk"]["S"].startswith("h/")]
    assert len(records) == 2 and head[0]["st"]["S"] == ("committed" if committed else "pending")
    if committed:  # every kind of write rolls the rows it meets forward first
        assert await now.get("k/0100") == Versioned(b"new", 2)
        assert await now.get("gone") is None
        assert await now.get("created") == Versioned(b"new", 1)
        writer, v = now, 2
    else:  # every kind of write waits while the owner may live, then aborts it
        assert await now.get("k/0100") == Versioned(b"old", 1)
        assert await now.get("created") is None
        for write in (now.put("k/0001", b"newer", 1), now.put("k/0002", b"newer", 0),
                      now.delete("k/0003"), now.delete("k/0004", expected_version=1),
                      now.write_batch([Op("put", "k/0005", b"newer", 1)]),
                      now.create("created", b"newer")):
            if locked:  # the owner may be alive: no write gets past its locks
                with pytest.raises(Unavailable, match="locked"):
                    await write
            else:
                write.close()
        writer, v = later, 1
    assert await writer.put("k/0001", b"newer", v) == v + 1
    assert await writer.put("k/0002", b"newer", 0) == v + 1
    assert await writer.delete("k/0003") is True
    assert await writer.delete("k/0004", expected_version=v) is True
    assert await writer.write_batch([Op("put", "k/0005", b"newer", v),
                                     Op("delete", "k/0006", expected_version=v)]) == [v + 1, 0]
    assert await writer.create("gone" if committed else "created", b"newer") == 1
    assert await later.recover() == 1  # (an aborted head stays until then)
    await assert_clean(raw, table)
    final = dict(await later.list_prefix(""))
    for key in ("k/0003", "k/0004", "k/0006", "created" if committed else "gone"):
        assert final.pop(key, None) == (
            Versioned(b"new", 1) if key == "created" else
            Versioned(b"old", 1) if key == "gone" else None)
    for key in ("k/0001", "k/0002", "k/0005", "gone" if committed else "created"):
        assert final.pop(key).value == b"newer"
    assert set(final.values()) == {Versioned(b"new", 2) if committed else Versioned(b"old", 1)}
    for s in (now, later):
        await s.close()


@pytest.mark.parametrize("by", ["writer", "recover"])
async def test_batch_aborted_as_stale_runs_again(dynamodb_endpoint: str, raw: Any,
                                                 by: str) -> None:
    """Another store, whose clock says the batch's owner went silent, aborts it (to write
    a locked row, or in recover(), which also deletes its record while the owner goes on
    locking); the owner finds its commit refused and runs the batch again."""
    table = fresh_table()
    owner = dynamo(dynamodb_endpoint, table)
    other = dynamo(dynamodb_endpoint, table, clock=lambda: time.time() + 60)
    keys = [f"k/{i:04d}" for i in range(150)]
    await owner.write_batch([Op("put", k, b"v1") for k in keys])
    assert await other.get(keys[0]) == Versioned(b"v1", 1)
    steps: list[str] = []

    async def meddle(step: str, txid: str) -> None:
        steps.append(step)
        if steps == ["recorded", "locked-group"]:
            if by == "writer":
                assert await other.put(keys[0], b"other", 1) == 2  # aborts, releases, writes
            else:
                assert await other.recover() == 1
                assert (await stored(raw, table))[1] == []

    owner.txn.step_hook = meddle
    versions = await owner.write_batch([Op("put", k, b"v2", 0) for k in keys])
    assert versions == [3 if by == "writer" else 2] + [2] * 149
    assert steps.count("recorded") == 2 and steps[-1] == "applied"
    assert await other.get(keys[0]) == Versioned(b"v2", versions[0])
    assert {v for _, v in await other.list_prefix("k/0001")} == {Versioned(b"v2", 2)}
    await assert_clean(raw, table)
    await owner.close()
    await other.close()


async def test_readers_never_see_half_a_batch(dynamodb_endpoint: str) -> None:
    """Between the steps of a batch (the hook runs there), reads from another store see
    the old values until the commit and the new ones from then on: from rows still
    locked, rows applied, or some of each."""
    table = fresh_table()
    writer, reader = dynamo(dynamodb_endpoint, table, parallelism=1), dynamo(
        dynamodb_endpoint, table)
    keys = [f"k/{i:04d}" for i in range(150)]
    await writer.write_batch([Op("put", k, b"old") for k in keys])
    seen: dict[str, set[bytes]] = {}

    async def look(step: str, txid: str) -> None:
        listed = await reader.list_prefix("k/")
        got = [await reader.get(k) for k in (keys[0], keys[99], keys[-1])]
        values = {v.value for _, v in listed} | {v.value for v in got if v is not None}
        assert len(listed) == 150 and len(values) == 1, (step, values)
        assert {v.version for _, v in listed} == ({2} if values == {b"new"} else {1})
        seen.setdefault(values.pop(), set()).add(step)

    writer.txn.step_hook = look
    await writer.write_batch([Op("put", k, b"new", 1) for k in keys])
    assert seen == {b"old": {"recorded", "locked-group", "locked"},
                    b"new": {"committed", "applied-group", "applied"}}
    await writer.close()
    await reader.close()


async def test_concurrent_readers_see_each_key_move_forward_once(
        dynamodb_endpoint: str) -> None:
    """Readers running while a batch commits: every row read is the old or the new one;
    once a read returned a new value, every read (get or listing) started later returns
    new values only: the batch commits at one moment for all its keys."""
    table = fresh_table()
    writer, reader = dynamo(dynamodb_endpoint, table), dynamo(dynamodb_endpoint, table)
    keys = [f"k/{i:04d}" for i in range(250)]
    await writer.write_batch([Op("put", k, b"old") for k in keys])
    first_new_seen_at: list[float] = []
    observations = 0

    async def read_until(done: asyncio.Event) -> None:
        nonlocal observations
        i = 0
        while not done.is_set():
            key = keys[(i * 37) % len(keys)]
            i += 1
            started = time.monotonic()
            if i % 5 == 0:
                listed = [v for _, v in await reader.list_prefix("k/")]
                assert set(listed) <= {Versioned(b"old", 1), Versioned(b"new", 2)}
                assert len(listed) == len(keys)
                versions = {v.version for v in listed}
            else:
                v = await reader.get(key)
                assert v in (Versioned(b"old", 1), Versioned(b"new", 2))
                versions = {v.version}
            if first_new_seen_at and started > first_new_seen_at[0]:
                assert versions == {2}, "a read after a new value was seen returned an old one"
            if 2 in versions and not first_new_seen_at:
                first_new_seen_at.append(time.monotonic())
            observations += 1

    done = asyncio.Event()

    async def write() -> None:
        try:
            await writer.write_batch([Op("put", k, b"new", 1) for k in keys])
        finally:
            done.set()

    await asyncio.gather(write(), read_until(done), read_until(done))
    assert observations > 10
    assert {v for _, v in await reader.list_prefix("k/")} == {Versioned(b"new", 2)}
    await writer.close()
    await reader.close()


def test_a_locked_row_of_the_biggest_key_and_values_fits_an_item() -> None:
    """A lock keeps the new value beside the old one: with the longest key and both values
    at MAX_VALUE_BYTES, the item is within DynamoDB's 400 KB (attribute names and values;
    a number counts at most 21 bytes, a map 3 bytes more and 1 per element)."""
    key, n = "k" * MAX_KEY_BYTES, 2**63 - 1
    _, fields = lock_write(Op("put", key, b"n" * MAX_VALUE_BYTES, n), n, n, uuid.uuid4().hex)
    item = {**data_key(key), "v": {"B": b"o" * MAX_VALUE_BYTES}, "ver": num(n),
            "lk": fields["ExpressionAttributeValues"][":lock"]}

    def size(typed: dict[str, Any]) -> int:
        ((kind, value),) = typed.items()
        if kind == "M":
            return 3 + sum(len(k) + 1 + size(v) for k, v in value.items())
        return 21 if kind == "N" else len(value) if kind == "B" else len(value.encode())

    assert 399_000 < sum(len(name) + size(typed) for name, typed in item.items()) <= 400_000


async def test_biggest_values(store: DynamoMetadataStore) -> None:
    big = [bytes([i]) * MAX_VALUE_BYTES for i in range(3)]
    ops = [Op("put", f"k{i}", big[0]) for i in range(3)]
    ops += [Op("put", f"s{i:03d}", b"x") for i in range(120)]
    await store.write_batch(ops)  # too big for one transaction: the protocol
    ops = [Op("put", f"k{i}", big[1 + i % 2], 1) for i in range(3)]
    ops += [Op("put", f"s{i:03d}", b"y", 1) for i in range(120)]
    await store.write_batch(ops)  # each locked row held two of the biggest values
    assert await store.get("k1") == Versioned(big[2], 2)
    with pytest.raises(LimitExceeded):
        await store.create("too-big", b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(InvalidArgument):
        await store.create("k" * (MAX_KEY_BYTES + 1), b"")
    assert await store.get("too-big") is None


# -- failed requests ---------------------------------------------------------------------


class Flaky:
    """The store's client, except that chosen calls fail: `fail[name]` is a list of
    (apply_first, error) consumed one per call of `name`."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.fail: dict[str, list[tuple[bool, BaseException]]] = {}
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)

        async def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            plan = self.fail.get(name)
            if plan:
                apply_first, error = plan.pop(0)
                if apply_first:
                    await real(**kwargs)
                raise error
            return await real(**kwargs)
        return call


def flaky(s: DynamoMetadataStore) -> Flaky:
    wrapper = Flaky(s._client)
    s.requests._client = lambda: wrapper
    return wrapper


def timeout() -> ReadTimeoutError:
    return ReadTimeoutError(endpoint_url="http://test")


def service_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


async def test_refused_and_failed_requests_are_retried(store: DynamoMetadataStore) -> None:
    await store.create("k", b"v1")
    client = flaky(store)
    client.fail["put_item"] = [(False, service_error("ThrottlingException", 400)),
                               (False, service_error("InternalServerError", 500)),
                               (False, timeout())]
    assert await store.put("k", b"v2", 1) == 2
    assert client.calls["put_item"] == 4
    client.fail["get_item"] = [(False, timeout())]
    assert await store.get("k") == Versioned(b"v2", 2)
    client.fail["transact_write_items"] = [
        (False, service_error("TransactionConflictException", 400))]
    assert await store.write_batch([Op("put", "k", b"v3", 2), Op("put", "j", b"")]) == [3, 1]


async def test_lost_answers_are_indeterminate_and_settle(store: DynamoMetadataStore) -> None:
    """A write that applied but whose answer was lost meets its own condition on the
    retry: Indeterminate, which the settling wrapper resolves by reading back."""
    await store.create("k", b"v1")
    client = flaky(store)
    client.fail["put_item"] = [(True, timeout())]
    with pytest.raises(Indeterminate):
        await store.put("k", b"v2", 1)
    assert await store.get("k") == Versioned(b"v2", 2)
    settling = SettlingMetadataStore(store)
    client.fail["put_item"] = [(True, timeout())]
    assert await settling.put("k", b"v3", 2) == 3
    client.fail["transact_write_items"] = [(True, timeout())]
    assert await settling.write_batch([Op("put", "k", b"v4", 3), Op("delete", "j")]) == [4, 0]
    assert settling.settled == 2


async def test_lost_commit_answer_is_learnt(store: DynamoMetadataStore, raw: Any) -> None:
    """The commit of a big batch lands but its answer is lost: the retry's condition
    fails, the head says committed, and the batch succeeds."""
    await store.get("warm-up")
    client = flaky(store)
    client.fail["update_item"] = [(True, timeout())]  # the first update_item is the commit
    assert await store.write_batch([Op("put", f"k{i:03d}", b"v") for i in range(150)]) == [
        1] * 150
    assert client.fail["update_item"] == []
    assert await store.get("k149") == Versioned(b"v", 1)
    await assert_clean(raw, store.table)


async def test_unreachable_server_is_unavailable() -> None:
    s = DynamoMetadataStore("t-unreachable", endpoint_url="http://127.0.0.1:9",
                            retry_s=0.3, connect_timeout_s=0.5, **CREDENTIALS)
    for op in (s.get("k"), s.create("k", b"v"), s.write_batch([Op("put", "k", b"")])):
        with pytest.raises(Unavailable):
            await op
    await s.close()


# -- URL and table ---------------------------------------------------------------------


async def test_factory_and_table(dynamodb_endpoint: str, raw: Any) -> None:
    table = fresh_table()
    url = (f"dynamodb://{table}?region=us-east-1&endpoint_url={dynamodb_endpoint}"
           "&aws_access_key_id=test&aws_secret_access_key=test&txn_timeout_s=8"
           "&parallelism=2&create_table=true")
    s = open_metadata_store(url)
    assert isinstance(s, DynamoMetadataStore) and s.table == table
    assert s.txn.txn_timeout_s == 8 and s.txn.parallelism == 2
    await s.create("k", b"v")
    await s.close()
    desc = (await raw.describe_table(TableName=table))["Table"]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in desc["KeySchema"]} == {
        ("pk", "HASH"), ("sk", "RANGE")}
    again = open_metadata_store(url.replace("&create_table=true", "&create_table=false"))
    assert await again.get("k") == Versioned(b"v", 1)
    await again.close()
    missing = dynamo(dynamodb_endpoint, fresh_table(), create_table=False)
    with pytest.raises(Unavailable):
        await missing.get("k")
    await missing.close()


async def test_table_with_another_key_schema_is_refused(dynamodb_endpoint: str,
                                                        raw: Any) -> None:
    table = fresh_table()
    await raw.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                           KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": "key",
                                                  "AttributeType": "S"}])
    s = dynamo(dynamodb_endpoint, table)
    with pytest.raises(InvalidArgument, match="key schema"):
        await s.get("k")
    await s.close()


@pytest.mark.parametrize("url", [
    "dynamodb://ab",                               # table name too short
    "dynamodb://bad name",
    "dynamodb://t-ok/path",
    "dynamodb://t-ok?table_class=standard",         # not an option
    "dynamodb://t-ok?txn_timeout_s=soon",
    "dynamodb://t-ok?create_table=maybe",
    "dynamodb://t-ok?parallelism=0",
    "dynamodb://t-ok?retry_s=10&txn_timeout_s=10",
    "dynamodb://t-ok/x?aws_secret_access_key=s3cret",
])
def test_factory_refuses(url: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        open_metadata_store(url)
    assert "s3cret" not in str(e.value)
