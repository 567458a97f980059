"""One contract, every ObjectStore: memory, local directory, and S3 against a moto server.

The S3 cases run against a real `moto.server` process (session fixture, 127.0.0.1,
ephemeral port). If it cannot start they are skipped with a warning; set
S2CORE_REQUIRE_S3=1 to make that a failure instead (CI should).
"""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest

from s2core.errors import Closed, Indeterminate, InvalidArgument, Unavailable
from s2core.objstore import ObjectExists, ObjectNotFound, ObjectStore
from s2core.objstore.localdir import LocalDirObjectStore
from s2core.objstore.memory import MemoryObjectStore
from s2core.objstore.s3 import S3ObjectStore

S3_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test",
                  "region": "us-east-1"}


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 and an ephemeral port, for the whole session."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:  # a file, not a pipe: moto logs every request
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                stdout=log, stderr=subprocess.STDOUT)
        except OSError as e:
            _no_s3(f"cannot run moto.server: {e}")
    try:
        deadline = time.monotonic() + 30
        while True:
            match = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log_path.read_text())
            if match:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                _no_s3(f"moto.server did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _no_s3(reason: str) -> None:
    message = f"S3 OBJECT STORE TESTS NOT RUN: {reason}"
    if os.environ.get("S2CORE_REQUIRE_S3"):
        pytest.fail(message)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


def s3_store(endpoint: str, **opts: object) -> S3ObjectStore:
    """A store in a fresh bucket, so tests never see each other's objects."""
    return S3ObjectStore(f"t-{uuid.uuid4().hex[:20]}", "pfx", endpoint_url=endpoint,
                         create_bucket=True, **S3_CREDENTIALS, **opts)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "localdir", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
                ) -> AsyncIterator[ObjectStore]:
    if request.param == "memory":
        s: ObjectStore = MemoryObjectStore()
    elif request.param == "localdir":
        s = LocalDirObjectStore(tmp_path)
    else:
        s = s3_store(request.getfixturevalue("moto_endpoint"))
    yield s
    await s.close()


async def test_put_get_roundtrip(store: ObjectStore) -> None:
    await store.put("a", b"hello")
    await store.put("b", memoryview(b"xxworldxx")[2:7])
    await store.put("empty", b"")
    assert await store.get("a") == b"hello"
    assert await store.get("b") == b"world"
    assert await store.get("empty") == b""


async def test_large_object(store: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    await store.put("big/one", data)
    assert await store.get("big/one") == data
    assert await store.get_range("big/one", 1024 * 1024, 1024 * 1024 + 100) == (
        data[1024 * 1024:1024 * 1024 + 100])


async def test_overwrite_replaces(store: ObjectStore) -> None:
    await store.put("k", b"one")
    await store.put("k", b"two")
    assert await store.get("k") == b"two"


async def test_if_absent(store: ObjectStore) -> None:
    await store.put("k", b"first", if_absent=True)
    with pytest.raises(ObjectExists):
        await store.put("k", b"second", if_absent=True)
    assert await store.get("k") == b"first"
    await store.delete("k")
    await store.put("k", b"third", if_absent=True)
    assert await store.get("k") == b"third"


async def test_concurrent_if_absent_has_one_winner(store: ObjectStore) -> None:
    results = await asyncio.gather(
        *(store.put("race", f"w{i}".encode(), if_absent=True) for i in range(16)),
        return_exceptions=True)
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, ObjectExists) for r in results if r is not None), results
    assert await store.get("race") == f"w{winners[0]}".encode()


async def test_missing_objects(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.get("nope")
    with pytest.raises(ObjectNotFound):
        await store.get_range("nope", 0, 10)
    with pytest.raises(ObjectNotFound):
        await store.get_range("nope", 3, 3)
    await store.put("dir/obj", b"x")
    with pytest.raises(ObjectNotFound):
        await store.get("dir")  # a prefix is not an object
    with pytest.raises(ObjectNotFound):
        await store.get("dir/obj/deeper")


async def test_get_range(store: ObjectStore) -> None:
    await store.put("r", b"0123456789")
    assert await store.get_range("r", 0, 4) == b"0123"
    assert await store.get_range("r", 3, 7) == b"3456"
    assert await store.get_range("r", 8, 100) == b"89"
    assert await store.get_range("r", 5, 5) == b""
    assert await store.get_range("r", 10, 20) == b""
    assert await store.get_range("r", 50, 60) == b""
    with pytest.raises(InvalidArgument):
        await store.get_range("r", 5, 4)
    with pytest.raises(InvalidArgument):
        await store.get_range("r", -1, 4)


async def test_list_is_sorted_and_filtered(store: ObjectStore) -> None:
    keys = ["b/2", "a", "b/10", "b/1", "ab", "c/x/y/z", "b1", "% _*", "é/ü"]
    for k in keys:
        await store.put(k, k.encode())
    assert await store.list() == sorted(keys)
    assert await store.list("") == sorted(keys)
    assert await store.list("b/") == ["b/1", "b/10", "b/2"]
    assert await store.list("b") == ["b/1", "b/10", "b/2", "b1"]
    assert await store.list("a") == ["a", "ab"]
    assert await store.list("c/x/") == ["c/x/y/z"]
    assert await store.list("c/x/y/z") == ["c/x/y/z"]
    assert await store.list("c/x/y/z/") == []
    assert await store.list("zzz") == []
    assert await store.list("../") == []
    assert await store.list("%") == ["% _*"]


async def test_list_many_keys(store: ObjectStore) -> None:
    keys = [f"many/{i:05d}" for i in range(1010)]  # more than one S3 page (1000)
    sem = asyncio.Semaphore(32)

    async def put(k: str) -> None:
        async with sem:
            await store.put(k, b"")

    await asyncio.gather(*(put(k) for k in keys))
    assert await store.list("many/") == keys


async def test_delete(store: ObjectStore) -> None:
    await store.put("d/1", b"x")
    await store.put("d/2", b"y")
    await store.delete("d/1")
    await store.delete("d/1")  # absent: not an error
    await store.delete("never/was")
    with pytest.raises(ObjectNotFound):
        await store.get("d/1")
    assert await store.list("d/") == ["d/2"]
    await store.delete("d/2")
    assert await store.list() == []
    await store.put("d", b"now an object")  # the emptied prefix can become a key
    assert await store.get("d") == b"now an object"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", ".", "a//b", "a/", "x\x00y"])
async def test_invalid_keys_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidArgument):
        await store.put(key, b"x")
    with pytest.raises(InvalidArgument):
        await store.get(key)
    with pytest.raises(InvalidArgument):
        await store.delete(key)


async def test_closed_store_refuses(store: ObjectStore) -> None:
    await store.put("k", b"v")
    await store.close()
    with pytest.raises(Closed):
        await store.get("k")
    with pytest.raises(Closed):
        await store.put("k2", b"v")


# -- S3 specifics ---------------------------------------------------------------------


async def test_s3_prefix_isolates(moto_endpoint: str) -> None:
    a = s3_store(moto_endpoint)
    b = S3ObjectStore(a.bucket, "other/", endpoint_url=moto_endpoint,
                      **S3_CREDENTIALS)  # type: ignore[arg-type]
    try:
        await a.put("k", b"from a")
        await b.put("k", b"from b")
        assert await a.get("k") == b"from a"
        assert await a.list() == ["k"]
        assert await b.list() == ["k"]
        assert a.name == f"s3://{a.bucket}/pfx/"
    finally:
        await a.close()
        await b.close()


async def test_s3_unreachable_is_unavailable() -> None:
    store = S3ObjectStore("bucket", endpoint_url="http://127.0.0.1:9", max_attempts=1,
                          connect_timeout=1, **S3_CREDENTIALS)  # type: ignore[arg-type]
    try:
        with pytest.raises(Unavailable):
            await store.get("k")
        with pytest.raises(Unavailable):  # never sent, so definitely not applied
            await store.put("k", b"v", if_absent=True)
        with pytest.raises(Unavailable):
            await store.list()
    finally:
        await store.close()


async def test_s3_missing_bucket_is_unavailable(moto_endpoint: str) -> None:
    store = S3ObjectStore(f"missing-{uuid.uuid4().hex[:12]}", endpoint_url=moto_endpoint,
                          **S3_CREDENTIALS)  # type: ignore[arg-type]
    try:
        with pytest.raises(Unavailable):
            await store.put("k", b"v")
        with pytest.raises(Unavailable):
            await store.get("k")
    finally:
        await store.close()


def test_s3_error_translation() -> None:
    from botocore.exceptions import ClientError, ReadTimeoutError

    from s2core.objstore.s3 import _translate

    def client_error(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": ""},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    assert isinstance(_translate(client_error(500, "InternalError"), "p", write=True),
                      Indeterminate)
    assert isinstance(_translate(client_error(500, "InternalError"), "g", write=False),
                      Unavailable)
    assert isinstance(_translate(client_error(503, "SlowDown"), "p", write=True), Unavailable)
    assert isinstance(_translate(client_error(409, "ConditionalRequestConflict"), "p",
                                 write=True), Unavailable)
    assert isinstance(_translate(client_error(404, "NoSuchKey"), "g", write=False),
                      ObjectNotFound)
    assert isinstance(_translate(client_error(400, "EntityTooLarge"), "p", write=True),
                      InvalidArgument)
    timeout = ReadTimeoutError(endpoint_url="http://x")
    assert isinstance(_translate(timeout, "p", write=True), Indeterminate)
    assert isinstance(_translate(timeout, "g", write=False), Unavailable)


async def test_s3_via_url_factory(moto_endpoint: str) -> None:
    from s2core.objstore import open_object_store

    bucket = f"t-{uuid.uuid4().hex[:20]}"
    store = open_object_store(
        f"s3://{bucket}/segs?endpoint_url={moto_endpoint}&region=us-east-1"
        "&create_bucket=true&aws_access_key_id=test&aws_secret_access_key=test")
    try:
        await store.put("x/1", b"v", if_absent=True)
        assert await store.list("x/") == ["x/1"]
        assert store.name == f"s3://{bucket}/segs/"
    finally:
        await store.close()


@pytest.mark.parametrize(("retries", "expected"), [(0, ObjectExists), (1, Indeterminate)])
async def test_s3_create_if_absent_after_a_retry_is_indeterminate(
        retries: int, expected: type[Exception]) -> None:
    """A 412 on a retried conditional put may answer our own lost first attempt."""
    from botocore.exceptions import ClientError

    class PreconditionFailingClient:
        async def put_object(self, **kwargs: object) -> None:
            assert kwargs["IfNoneMatch"] == "*"
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": ""},
                               "ResponseMetadata": {"HTTPStatusCode": 412,
                                                    "RetryAttempts": retries}}, "PutObject")

    store = S3ObjectStore("bucket", **S3_CREDENTIALS)  # type: ignore[arg-type]
    store._client = PreconditionFailingClient()
    with pytest.raises(expected):
        await store.put("k", b"v", if_absent=True)
