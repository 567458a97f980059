"""An in-memory object store for tests and simulations."""
from __future__ import annotations

from s2core.errors import Closed
from s2core.objstore.base import ObjectExists, ObjectNotFound
from s2core.objstore.keys import check_key, check_range


class MemoryObjectStore:
    """Objects in a dict; `put` is trivially durable for the life of the process.

    Operations complete without yielding to the event loop, so under a virtual-time loop
    they add no time and no interleaving; wrap it in FaultyObjectStore to get both.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._objects: dict[str, bytes] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"object store {self.name} is closed")

    async def put(self, key: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        """Store a copy of `data`; with `if_absent`, raise ObjectExists if `key` is present."""
        self._check_open()
        check_key(key)
        if if_absent and key in self._objects:
            raise ObjectExists(key)
        self._objects[key] = bytes(data)

    async def get(self, key: str) -> bytes:
        """The object's bytes, or ObjectNotFound."""
        self._check_open()
        check_key(key)
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFound(key) from None

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, clamped to its size."""
        check_range(start, end)
        data = await self.get(key)
        return data[start:end]

    async def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, sorted."""
        self._check_open()
        return sorted(k for k in self._objects if k.startswith(prefix))

    async def delete(self, key: str) -> None:
        """Remove `key` if present."""
        self._check_open()
        check_key(key)
        self._objects.pop(key, None)

    async def close(self) -> None:
        """Further operations raise Closed."""
        self._closed = True
