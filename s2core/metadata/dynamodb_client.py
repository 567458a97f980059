"""DynamoDB requests for the metadata store: retries, and botocore's errors translated.

Every request goes through `DynamoRequests.call`, which retries what DynamoDB refused
without applying (throttling, a conflicting transaction, a connection that never opened)
and what may or may not have applied (5xx, timeouts, dropped connections), with
exponential backoff for up to `retry_s`. botocore's own retries are off: only here is it
known whether an earlier attempt of a write was ambiguous. When retries run out, a read,
or a write whose every attempt was refused, raises Unavailable; a write with an ambiguous
attempt raises Indeterminate. A failed condition raises ConditionFailed (and a
TransactWriteItems cancelled by one, Cancelled), both saying whether an earlier attempt
was ambiguous: the condition may then have failed on the request's own first landing.
"""
from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from s2core.errors import Closed, Indeterminate, InvalidArgument, LimitExceeded, Unavailable

# Refused without being applied: retried.
_REFUSED = {"ThrottlingException", "ProvisionedThroughputExceededException",
            "RequestLimitExceeded", "TransactionConflictException", "LimitExceededException"}
_REFUSED_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
# The service failed; a write may have applied: retried.
_AMBIGUOUS = {"InternalServerError", "ServiceUnavailable", "TransactionInProgressException"}
_BATCH_GET_KEYS = 100
_BATCH_WRITE_ITEMS = 25


class ConditionFailed(Exception):
    """A conditional write's condition did not hold."""

    def __init__(self, ambiguous: bool) -> None:
        super().__init__("condition failed" + (" after an ambiguous attempt" if ambiguous else ""))
        self.ambiguous = ambiguous


class Cancelled(Exception):
    """A TransactWriteItems was cancelled because conditions failed; `failed` are the
    indices of its items whose condition did not hold."""

    def __init__(self, failed: list[int], ambiguous: bool) -> None:
        super().__init__(f"transaction cancelled: conditions of items {failed} failed")
        self.failed = failed
        self.ambiguous = ambiguous


class DynamoRequests:
    """The requests one store makes on one table (see the module doc)."""

    def __init__(self, table: str, client: Callable[[], Any], *, retry_s: float,
                 rng: random.Random, closed: Callable[[], bool]) -> None:
        self.table = table
        self._client = client
        self.retry_s = retry_s
        self._rng = rng
        self._closed = closed

    async def call(self, name: str, *, write: bool, **kwargs: Any) -> dict[str, Any]:
        """One request (a botocore client method and its arguments), retried as above."""
        ambiguous = False
        delay = 0.02
        deadline = time.monotonic() + self.retry_s
        while True:
            if self._closed():
                raise Closed(f"metadata store dynamodb://{self.table} is closed")
            try:
                return await getattr(self._client(), name)(**kwargs)
            except Exception as e:  # translated or re-raised below
                failure = self._failure(e, name, write)
                if isinstance(failure, _Retry):
                    ambiguous |= failure.ambiguous and write
                    if time.monotonic() + delay > deadline:
                        what = f"DynamoDB {name} on {self.table} failed: {e!r}"
                        raise (Indeterminate(what) if ambiguous else Unavailable(what)) from e
                    await asyncio.sleep(delay * (0.5 + self._rng.random()))
                    delay = min(2 * delay, 1.0)
                    continue
                if isinstance(failure, (ConditionFailed, Cancelled)):
                    failure.ambiguous = ambiguous
                raise failure from e

    def _failure(self, e: Exception, name: str, write: bool) -> Exception:
        if self._closed():
            return Closed(f"metadata store dynamodb://{self.table} is closed")
        if isinstance(e, ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code == "ConditionalCheckFailedException":
                return ConditionFailed(False)
            if code == "TransactionCanceledException":
                return _cancelled(e, f"{name} on {self.table}")
            if code in _REFUSED:
                return _Retry(ambiguous=False)
            if code in _AMBIGUOUS or status >= 500:
                return _Retry(ambiguous=True)
            if code == "ItemCollectionSizeLimitExceededException":
                return LimitExceeded(f"DynamoDB {name} on {self.table}: {e}")
            if code in ("ValidationException", "SerializationException"):
                return InvalidArgument(f"DynamoDB {name} on {self.table}: {e}")
            return Unavailable(f"DynamoDB {name} on {self.table}: {code} {e}")
        if isinstance(e, BotoConnectionError):  # never connected: the request was not sent
            return _Retry(ambiguous=False)
        if isinstance(e, (HTTPClientError, BotoCoreError, aiohttp.ClientError, TimeoutError,
                          OSError)):
            return _Retry(ambiguous=write)
        raise e  # a bug, not a DynamoDB failure

    # -- typed helpers ---------------------------------------------------------------------

    async def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The item with `key` (a consistent read), or None."""
        resp = await self.call("get_item", write=False, TableName=self.table, Key=key,
                               ConsistentRead=True)
        return resp.get("Item")

    async def batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items that exist among `keys` (consistent reads, 100 keys a request)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), _BATCH_GET_KEYS):
            pending: dict[str, Any] = {"Keys": keys[start:start + _BATCH_GET_KEYS],
                                       "ConsistentRead": True}
            delay = 0.02
            while pending:
                resp = await self.call("batch_get_item", write=False,
                                       RequestItems={self.table: pending})
                found.extend(resp.get("Responses", {}).get(self.table, ()))
                pending = resp.get("UnprocessedKeys", {}).get(self.table)
                if pending:  # throttled part of the batch: back off before asking again
                    await asyncio.sleep(delay * (0.5 + self._rng.random()))
                    delay = min(2 * delay, 1.0)
        return found

    async def batch_write(self, requests: list[dict[str, Any]]) -> None:
        """Unconditional puts/deletes ({"PutRequest": ...} / {"DeleteRequest": ...})."""
        for start in range(0, len(requests), _BATCH_WRITE_ITEMS):
            pending = requests[start:start + _BATCH_WRITE_ITEMS]
            delay = 0.02
            while pending:
                resp = await self.call("batch_write_item", write=True,
                                       RequestItems={self.table: pending})
                pending = resp.get("UnprocessedItems", {}).get(self.table, [])
                if pending:
                    await asyncio.sleep(delay * (0.5 + self._rng.random()))
                    delay = min(2 * delay, 1.0)

    async def write(self, kind: str, fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """One PutItem / UpdateItem / DeleteItem ("Put", "Update", "Delete")."""
        name = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}[kind]
        return await self.call(name, write=True, TableName=self.table, **fields, **extra)

    async def transact(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """One TransactWriteItems; its token makes DynamoDB apply a retried one once."""
        token = uuid.UUID(int=self._rng.getrandbits(128)).hex
        await self.call("transact_write_items", write=True, ClientRequestToken=token,
                        TransactItems=[{kind: {"TableName": self.table, **fields}}
                                       for kind, fields in items])


def error_code(e: BaseException) -> str | None:
    """DynamoDB's error code behind an error this module raised, if any."""
    cause = e.__cause__
    if isinstance(cause, ClientError):
        return cause.response.get("Error", {}).get("Code")
    return None


class _Retry(Exception):
    def __init__(self, ambiguous: bool) -> None:
        super().__init__("retry")
        self.ambiguous = ambiguous


def _cancelled(e: ClientError, what: str) -> Exception:
    codes = [r.get("Code") for r in e.response.get("CancellationReasons", ())]
    failed = [i for i, code in enumerate(codes) if code == "ConditionalCheckFailed"]
    if failed:
        return Cancelled(failed, False)
    if "ItemCollectionSizeLimitExceeded" in codes:
        return LimitExceeded(f"DynamoDB {what}: {codes}")
    if "ValidationError" in codes:
        return InvalidArgument(f"DynamoDB {what}: {e}")
    if not codes or all(c in _REFUSED_REASONS or c in ("None", None) for c in codes):
        return _Retry(ambiguous=False)
    return Unavailable(f"DynamoDB {what}: cancelled {codes}")
