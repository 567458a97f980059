"""moto's standalone server (the app `python -m moto.server` runs), with two of its DynamoDB
shortcuts taken out so that it behaves as DynamoDB does under concurrent requests.

Usage: python moto_dynamodb_server.py PORT (0: an ephemeral port; the server logs
"Running on http://127.0.0.1:PORT" once it listens, as `moto.server` does).

1. One request at a time. moto evaluates a write's condition and then stores the item
   without a lock, on one thread per request, so two concurrent conditional writes can
   both succeed; DynamoDB evaluates each item's condition and write atomically.
2. A transaction rolls back only what it touched. moto snapshots a whole table (a deep
   copy, once per item of the transaction) to undo a cancelled TransactWriteItems: 100
   items on a 2,000-item table take seconds, and restoring the snapshot would also undo
   other requests' writes if requests overlapped. Here its table snapshot is a reference,
   and the items the transaction names are copied before it runs and put back if it
   fails: the same outcome, since (1) lets nothing else run meanwhile.

Everything else (expressions, conditions, cancellation reasons, limits) is moto's own.
"""
from __future__ import annotations

import copy
import sys
import threading
from typing import Any

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


class _TablesByReference:
    """The `copy` module as moto's DynamoDB backend sees it, except that a Table is not
    deep-copied (that copy only serves to roll back a transaction; see the module doc)."""

    def deepcopy(self, obj: Any, memo: Any = None) -> Any:
        return obj if isinstance(obj, Table) else copy.deepcopy(obj, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _touched_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple]:
    """(table, hash key, range key, deep copy of the item or None) per item named."""
    touched = []
    for entry in transact_items:
        for kind, op in entry.items():
            try:
                table = backend.get_table(op["TableName"])
                key = ({a: op["Item"][a] for a in (table.hash_key_attr, table.range_key_attr)}
                       if kind == "Put" else op["Key"])
                hash_key = DynamoType(key[table.hash_key_attr])
                range_key = DynamoType(key[table.range_key_attr])
            except Exception:  # noqa: BLE001 - a malformed request: moto itself answers it
                hash_key = None
            if hash_key is not None:
                touched.append((table, hash_key, range_key,
                                copy.deepcopy(table.get_item(hash_key, range_key))))
    return touched


def _patch_transactions() -> None:
    assert all(hasattr(dynamodb_models, name) for name in ("copy", "DynamoDBBackend"))
    dynamodb_models.copy = _TablesByReference()  # type: ignore[assignment]
    original = dynamodb_models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        touched = _touched_items(self, transact_items)
        try:
            original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in touched:
                if item is None:
                    table.items[hash_key].pop(range_key, None)
                else:
                    table.items[hash_key][range_key] = item
            raise

    dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items


def main() -> None:
    _patch_transactions()
    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serialized(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with one_at_a_time:
            return list(app(environ, start_response))

    run_simple("127.0.0.1", int(sys.argv[1]), serialized, threaded=True)


if __name__ == "__main__":
    main()
