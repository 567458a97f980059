"""The DynamoDB metadata table's items and the requests that change them, as pure functions
(no I/O): the layout, the size limits, and the expressions of every conditional write.

One table, partition key `pk` and sort key `sk` (both strings). Metadata rows live in
partition "kv", one item per key (`sk` = the key), so `list_prefix` is a Query on one
partition: DynamoDB orders string sort keys by their UTF-8 bytes, which is code-point
order (rules.py). Attributes of a row:

- `v` (binary) and `ver` (number): the committed value and version; both absent on a
  placeholder (an absent key locked by a transaction).
- `lk` (map), while a transaction holds the row's lock: `t`, the transaction id, and its
  intent: `n`, the new version (0: delete) and, for a put, `v`, the new value. One
  attribute, so a lock and its intent are set and removed together.

Multi-item transactions (dynamodb_txn.py) keep a record in partition "txn": a head item
`h/<txid>` (`st` = pending, committed or aborted, `hb` = owner's last heartbeat in ms,
`own` = owner, `n` = number of parts) and parts `p/<txid>/<i>` listing the locked keys
(`ks`, a JSON array), each under PART_BYTES.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from s2core.errors import InvalidArgument, LimitExceeded
from s2core.metadata.base import Op, Versioned
from s2core.metadata.rules import check_key

DATA, TXN = "kv", "txn"
PENDING, COMMITTED, ABORTED = "pending", "committed", "aborted"

MAX_ITEM_BYTES = 400_000  # DynamoDB's item size limit, 400 KB (names and values)
MAX_KEY_BYTES = 1024  # DynamoDB's sort key limit
# A locked row holds its old value and the new one: two values, the key and small
# attributes must fit in one item.
MAX_VALUE_BYTES = (MAX_ITEM_BYTES - MAX_KEY_BYTES - 1024) // 2
MAX_TRANSACTION_ITEMS = 100  # TransactWriteItems: at most 100 items
TRANSACTION_BYTES = 3 * 1024 * 1024  # of the 4 MB a TransactWriteItems may carry
PART_BYTES = 350 * 1024  # the keys listed by one transaction record part
_ITEM_OVERHEAD = 160  # attribute names, partition key, numbers, lock id (an upper bound)
_NAME = re.compile(r"#(\w+)")


def check_dynamo_key(key: str) -> str:
    """check_key, plus DynamoDB's limit: a sort key is at most 1024 bytes of UTF-8."""
    if len(check_key(key).encode()) > MAX_KEY_BYTES:
        raise InvalidArgument(f"a DynamoDB metadata key is at most {MAX_KEY_BYTES} bytes of "
                              f"UTF-8: {key[:40]!r}...")
    return key


def check_dynamo_value(value: bytes) -> bytes:
    """A value as bytes; LimitExceeded past MAX_VALUE_BYTES (half an item, see above)."""
    if len(value) > MAX_VALUE_BYTES:
        raise LimitExceeded(f"a DynamoDB metadata value is at most {MAX_VALUE_BYTES} bytes, "
                            f"got {len(value)}")
    return value


def op_bytes(op: Op) -> int:
    """An upper bound of what `op` adds to a transaction's size."""
    return 2 * len(op.key.encode()) + len(op.value or b"") + _ITEM_OVERHEAD


def data_key(key: str) -> dict[str, Any]:
    return {"pk": {"S": DATA}, "sk": {"S": key}}


def head_key(txid: str) -> dict[str, Any]:
    return {"pk": {"S": TXN}, "sk": {"S": f"h/{txid}"}}


def part_key(txid: str, index: int) -> dict[str, Any]:
    return {"pk": {"S": TXN}, "sk": {"S": f"p/{txid}/{index:06d}"}}


def expression(update: str | None = None, condition: str | None = None,
               **values: Any) -> dict[str, Any]:
    """Request fields for an update and/or condition expression. Attribute names are
    written `#name` (every name is aliased: the reserved words are many); `values` are
    the `:name` placeholders, as DynamoDB typed values."""
    fields: dict[str, Any] = {}
    text = ""
    if update is not None:
        fields["UpdateExpression"] = update
        text += update
    if condition is not None:
        fields["ConditionExpression"] = condition
        text += " " + condition
    fields["ExpressionAttributeNames"] = {f"#{n}": n for n in _NAME.findall(text)}
    if values:
        fields["ExpressionAttributeValues"] = {f":{k}": v for k, v in values.items()}
    return fields


def num(n: int) -> dict[str, str]:
    return {"N": str(n)}


def state_condition(version: int | None) -> tuple[str, dict[str, Any]]:
    """The condition that a row is unlocked and holds `version` (None: absent)."""
    if version is None:
        return "attribute_not_exists(#ver) AND attribute_not_exists(#lk)", {}
    return "#ver = :seen AND attribute_not_exists(#lk)", {"seen": num(version)}


# -- rows as read --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """A metadata row's item: committed state, and the lock with its intent if any."""

    key: str
    value: bytes | None  # None (with version None): a placeholder, i.e. absent
    version: int | None
    lock: str | None = None
    new_value: bytes | None = None
    new_version: int | None = None  # 0: the intent is a delete

    def committed(self) -> Versioned | None:
        """The row as it is while its lock's transaction is not committed."""
        return None if self.version is None else Versioned(self.value or b"", self.version)

    def intended(self) -> Versioned | None:
        """The row as its lock's committed transaction leaves it."""
        assert self.lock is not None and self.new_version is not None, self
        return None if self.new_version == 0 else Versioned(self.new_value or b"",
                                                           self.new_version)


def parse_row(item: dict[str, Any] | None) -> Row | None:
    if item is None:
        return None
    version = int(item["ver"]["N"]) if "ver" in item else None
    value = bytes(item["v"]["B"]) if "v" in item else None
    assert (value is None) == (version is None), item
    if "lk" not in item:
        assert version is not None, f"unlocked placeholder: {item}"
        return Row(item["sk"]["S"], value, version)
    lock = item["lk"]["M"]
    new_value = bytes(lock["v"]["B"]) if "v" in lock else None
    return Row(item["sk"]["S"], value, version, lock["t"]["S"], new_value,
               int(lock["n"]["N"]))


@dataclass(frozen=True, slots=True)
class Head:
    """A transaction record's head: its state and its owner's last heartbeat."""

    txid: str
    state: str
    heartbeat_ms: int
    owner: str
    parts: int


def parse_head(item: dict[str, Any] | None) -> Head | None:
    if item is None:
        return None
    head = Head(item["sk"]["S"][2:], item["st"]["S"], int(item["hb"]["N"]),
                item["own"]["S"], int(item["n"]["N"]))
    assert head.state in (PENDING, COMMITTED, ABORTED), item
    return head


def head_item(txid: str, owner: str, now_ms: int, parts: int) -> dict[str, Any]:
    return {**head_key(txid), "st": {"S": PENDING}, "hb": num(now_ms), "own": {"S": owner},
            "n": num(parts)}


def key_parts(keys: list[str]) -> list[list[str]]:
    """`keys` cut into lists whose JSON stays under PART_BYTES."""
    parts: list[list[str]] = [[]]
    size = 0
    for key in keys:
        cost = len(json.dumps(key)) + 2
        if parts[-1] and size + cost > PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(key)
        size += cost
    return parts


def part_item(txid: str, index: int, keys: list[str]) -> dict[str, Any]:
    return {**part_key(txid, index), "ks": {"B": json.dumps(keys).encode()}}


def part_keys(item: dict[str, Any]) -> list[str]:
    return json.loads(bytes(item["ks"]["B"]))


# -- writes ------------------------------------------------------------------------------


def transaction_groups(ops: list[Op], order: list[int]) -> list[list[int]]:
    """`order` (indices into `ops`) cut into runs that fit one TransactWriteItems."""
    groups: list[list[int]] = [[]]
    size = 0
    for i in order:
        cost = op_bytes(ops[i])
        if groups[-1] and (len(groups[-1]) == MAX_TRANSACTION_ITEMS
                           or size + cost > TRANSACTION_BYTES):
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += cost
    return [g for g in groups if g]


def write_groups(writes: list[tuple[str, dict[str, Any]]]
                 ) -> list[list[tuple[str, dict[str, Any]]]]:
    """`writes` cut into runs that fit one TransactWriteItems."""
    groups: list[list[tuple[str, dict[str, Any]]]] = [[]]
    size = 0
    for write in writes:
        item = write[1].get("Item", {})
        cost = len(item.get("v", {}).get("B", b"")) + 2 * MAX_KEY_BYTES + _ITEM_OVERHEAD
        if groups[-1] and (len(groups[-1]) == MAX_TRANSACTION_ITEMS
                           or size + cost > TRANSACTION_BYTES):
            groups.append([])
            size = 0
        groups[-1].append(write)
        size += cost
    return [g for g in groups if g]


def fits_one_transaction(ops: list[Op]) -> bool:
    return (len(ops) <= MAX_TRANSACTION_ITEMS
            and sum(op_bytes(op) for op in ops) <= TRANSACTION_BYTES)


def direct_write(op: Op, seen: int | None) -> tuple[str, dict[str, Any]]:
    """A transaction item applying `op` to an unlocked row at once (a batch that fits one
    TransactWriteItems). `seen` is the row's version for an unconditional put."""
    if op.kind == "delete":
        if op.expected_version is None:
            cond, values = "attribute_not_exists(#lk)", {}
        else:
            cond, values = state_condition(op.expected_version)
        return "Delete", {"Key": data_key(op.key), **expression(condition=cond, **values)}
    expected = seen if op.expected_version == 0 else op.expected_version
    new_version = 1 if expected is None else expected + 1
    cond, values = state_condition(expected)
    item = {**data_key(op.key), "v": {"B": op.value}, "ver": num(new_version)}
    return "Put", {"Item": item, **expression(condition=cond, **values)}


def lock_write(op: Op, seen: int | None, new_version: int, txid: str
               ) -> tuple[str, dict[str, Any]]:
    """A transaction item locking `op`'s row for `txid` with its intent, if the row is
    unlocked at version `seen` (None: absent; the lock then makes a placeholder)."""
    cond, values = state_condition(seen)
    lock: dict[str, Any] = {"t": {"S": txid}, "n": num(new_version)}
    if op.kind == "put":
        lock["v"] = {"B": op.value}
    return "Update", {"Key": data_key(op.key), **expression(
        "SET #lk = :lock", cond, lock={"M": lock}, **values)}


def roll_forward(key: str, txid: str, new_value: bytes | None, new_version: int
                 ) -> tuple[str, dict[str, Any]]:
    """The write that makes a committed transaction's intent the row (whole: the lock
    and the intent go), if the transaction still holds it."""
    condition = expression(condition="#lk.#t = :txid", txid={"S": txid})
    if new_version == 0:
        return "Delete", {"Key": data_key(key), **condition}
    assert new_value is not None, key
    return "Put", {"Item": {**data_key(key), "v": {"B": new_value}, "ver": num(new_version)},
                   **condition}


def release(key: str, txid: str, placeholder: bool) -> tuple[str, dict[str, Any]]:
    """The write that drops an aborted transaction's lock (and its placeholder)."""
    if placeholder:
        return "Delete", {"Key": data_key(key), **expression(
            condition="#lk.#t = :txid AND attribute_not_exists(#ver)", txid={"S": txid})}
    return "Update", {"Key": data_key(key), **expression(
        "REMOVE #lk", "#lk.#t = :txid", txid={"S": txid})}
