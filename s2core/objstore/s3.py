"""An object store on any S3 API bucket, through one long-lived aioboto3 client.

Create-if-absent is a conditional PUT (`If-None-Match: *`), which S3 (since 2024), moto,
MinIO and R2 evaluate atomically on the server. (moto's check-then-store is not atomic
under truly concurrent requests for the same key; real S3 is.)

Every botocore/aiohttp error is translated at this boundary, so callers see only s2core
errors, and definite failures stay distinct from indeterminate ones:

- 404 / NoSuchKey -> ObjectNotFound; 412 on a create-if-absent put -> ObjectExists.
- The request never reached S3 (connect error/timeout), S3 refused it (503 SlowDown,
  409 conflicting conditional write), or it was a read -> Unavailable.
- A write whose outcome is unknown (read timeout, dropped connection, 500) ->
  Indeterminate. botocore's own retries make one more case indeterminate: a 412 on a
  retried create-if-absent may be the answer to our own earlier, lost attempt.
"""
from __future__ import annotations

import asyncio
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from s2core.errors import Closed, Indeterminate, InvalidArgument, S2Error, Unavailable
from s2core.objstore.base import ObjectExists, ObjectNotFound
from s2core.objstore.keys import check_key, check_range

_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_REFUSED_STATUSES = {409, 503}  # conflicting conditional write, SlowDown: not applied


class S3ObjectStore:
    """Objects under `prefix` in an S3 API `bucket`; `put` returns once S3 acknowledged it.

    `prefix` gets a trailing '/' if it lacks one. Credentials default to botocore's usual
    chain (environment, config files, instance role). The client is opened on first use;
    `create_bucket=True` creates the bucket then (for local S3 servers in tests and dev).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        create_bucket: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
        max_pool_connections: int = 64,
    ) -> None:
        if not bucket:
            raise InvalidArgument("S3 bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.name = f"s3://{bucket}/{self.prefix}"
        self._endpoint_url = endpoint_url
        self._create_bucket = create_bucket
        self._session = aioboto3.Session(
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            region_name=region,
        )
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=max_pool_connections,
        )
        self._client: Any = None
        self._client_cm: Any = None
        self._open_lock = asyncio.Lock()
        self._closed = False

    # -- interface ----------------------------------------------------------------------

    async def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        """Store `data`; with `if_absent`, a conditional PUT that raises ObjectExists."""
        s3 = await self._s3()
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key),
                                  "Body": bytes(data)}
        if if_absent:
            kwargs["IfNoneMatch"] = "*"
        try:
            await s3.put_object(**kwargs)
        except Exception as e:
            if if_absent and _is_precondition_failed(e):
                if _retry_attempts(e):
                    raise Indeterminate(
                        f"put {key!r}: exists after a retry; it may be our own write") from e
                raise ObjectExists(key) from e
            raise _translate(e, f"put {key!r}", write=True) from e

    async def get(self, key: str) -> bytes:
        """The object's bytes, or ObjectNotFound."""
        return await self._get(key, None)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, clamped to its size (an HTTP Range request)."""
        check_range(start, end)
        if start == end:  # HTTP cannot express an empty range; still report a missing key
            s3 = await self._s3()
            try:
                await s3.head_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as e:
                raise _translate(e, f"head {key!r}", write=False) from e
            return b""
        return await self._get(key, f"bytes={start}-{end - 1}")

    async def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, sorted (all pages of ListObjectsV2)."""
        s3 = await self._s3()
        keys: list[str] = []
        strip = len(self.prefix)
        try:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", ()))
        except Exception as e:
            raise _translate(e, f"list {prefix!r}", write=False) from e
        keys.sort()  # S3 already sorts by UTF-8 bytes, which is code point order; be sure
        return keys

    async def delete(self, key: str) -> None:
        """Remove `key`; S3 answers success for an absent key too."""
        s3 = await self._s3()
        try:
            await s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            raise _translate(e, f"delete {key!r}", write=True) from e

    async def close(self) -> None:
        """Close the client and its connection pool."""
        async with self._open_lock:
            self._closed = True
            cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    # -- helpers ------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def _s3(self) -> Any:
        client = self._client
        if client is not None:
            return client
        async with self._open_lock:
            if self._closed:
                raise Closed(f"object store {self.name} is closed")
            if self._client is None:
                cm = self._session.client(
                    "s3", endpoint_url=self._endpoint_url, config=self._config)
                client = await cm.__aenter__()
                try:
                    if self._create_bucket:
                        await _ensure_bucket(client, self.bucket)
                except BaseException:
                    await cm.__aexit__(None, None, None)
                    raise
                self._client_cm, self._client = cm, client
            return self._client

    async def _get(self, key: str, byte_range: str | None) -> bytes:
        s3 = await self._s3()
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if byte_range is not None:
            kwargs["Range"] = byte_range
        try:
            resp = await s3.get_object(**kwargs)
            async with resp["Body"] as body:
                return await body.read()
        except Exception as e:
            if byte_range is not None and _status(e) == 416:
                return b""  # the range starts at or past the end of an existing object
            raise _translate(e, f"get {key!r}", write=False) from e


async def _ensure_bucket(client: Any, bucket: str) -> None:
    try:
        await client.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise _translate(e, f"create bucket {bucket!r}", write=False) from e
    except Exception as e:
        raise _translate(e, f"create bucket {bucket!r}", write=False) from e


def _status(e: BaseException) -> int | None:
    if isinstance(e, ClientError):
        return e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _retry_attempts(e: BaseException) -> int:
    if isinstance(e, ClientError):
        return int(e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    return 0


def _is_precondition_failed(e: BaseException) -> bool:
    if not isinstance(e, ClientError):
        return False
    return e.response.get("Error", {}).get("Code") == "PreconditionFailed" or _status(e) == 412


def _translate(e: BaseException, what: str, *, write: bool) -> S2Error:
    """The s2core error for a failed S3 call (`write`: the call could have changed state)."""
    if isinstance(e, S2Error):
        return e
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code", "")
        status = _status(e) or 0
        if code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
            return ObjectNotFound(what)
        if status >= 500 and status not in _REFUSED_STATUSES and write:
            return Indeterminate(f"{what}: S3 {status} {code}")
        if status >= 500 or status in _REFUSED_STATUSES or status in (403, 404):
            return Unavailable(f"{what}: S3 {status} {code}")
        return InvalidArgument(f"{what}: S3 {status} {code}: {e}")
    if isinstance(e, BotoConnectionError):
        # Could not connect (refused, DNS, connect timeout, TLS): the request was not sent.
        # Read timeouts and dropped connections are HTTPClientErrors, handled below.
        return Unavailable(f"{what}: {e}")
    if isinstance(e, (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        if write:
            return Indeterminate(f"{what}: {e}")
        return Unavailable(f"{what}: {e}")
    raise e  # a bug, not an S3 failure: let it surface unchanged

