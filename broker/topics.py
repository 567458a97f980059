"""Kafka topics on s2core: topic rows in the metadata store, one stream per partition.

A topic row `kafka/topics/<name>` holds its UUID, partition count and non-default configs.
Partition p of topic t is the stream `kafka/<t>/<p>` in the broker's basin; its offsets are
the stream's seq_nums.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from broker.protocol.errors import ErrorCode
from broker.topic_configs import ConfigError, effective, validate_topic_configs
from s2core.errors import AlreadyExists, StreamNotFound
from s2core.metadata import list_all
from s2core.metadata.base import VersionMismatch
from s2core.store import StreamStore

_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_NAME = 249
PREFIX = "kafka/topics/"


class TopicError(Exception):
    """A topic operation failed with a Kafka error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_topic_name(name: str | None) -> None:
    if not name or name in (".", "..") or len(name) > MAX_TOPIC_NAME or not _LEGAL.match(name):
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                         f"Topic name {name!r} is illegal: it must be 1-249 characters of "
                         "[a-zA-Z0-9._-] and not '.' or '..'")


@dataclass(slots=True)
class Topic:
    """A topic as cached from its metadata row."""

    name: str
    id: bytes
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0
    version: int = 0
    # partition -> the replica list a reassignment asked for (broker/reassign.py); others
    # have none: their leader is their one replica
    replicas: dict[int, list[int]] = field(default_factory=dict)

    def config(self, key: str) -> str:
        return effective(self.configs, key)

    def to_json(self) -> bytes:
        d = {"id": self.id.hex(), "partitions": self.partitions, "configs": self.configs,
             "created_ms": self.created_ms}
        if self.replicas:
            d["replicas"] = {str(p): r for p, r in self.replicas.items()}
        return json.dumps(d).encode()


def stream_name(topic: str, partition: int) -> str:
    return f"kafka/{topic}/{partition}"


def stream_config(configs: dict[str, str]) -> dict:
    """The s2core stream config for partitions of a topic with these Kafka configs.

    Streams keep everything: `retention.ms` is applied by the broker (broker/retention.py)
    the way Kafka applies it, to closed segments only (offloaded sections here), judged by
    their newest record — not record by record, which would drop records with an old
    CreateTime the moment they arrive."""
    return {"retention_policy": {"infinite": {}},
            "timestamping": {"mode": "client-prefer", "uncapped": True}}


class TopicRegistry:
    """All topics, cached in memory; every change is a conditional metadata write."""

    def __init__(self, store: StreamStore, basin: str) -> None:
        self.store = store
        self.metadata = store.metadata
        self.basin = basin
        self.topics: dict[str, Topic] = {}
        self.by_id: dict[bytes, Topic] = {}
        # (topic, partition) -> the channel of a new partition's stream (None: the store's
        # default); a cluster places partitions on its brokers (broker/cluster.py)
        self.place = None
        # (name) -> None: what else is cached of a topic another broker deleted
        self.on_gone = None

    async def load(self) -> None:
        """(Again: a cluster's brokers read what the others changed: broker/cluster.py.
        The new tables are swapped in whole.)"""
        rows = await list_all(self.metadata, PREFIX)
        old = self.topics
        self.topics, self.by_id = {}, {}
        for key, v in rows:
            self._cache(key[len(PREFIX):], v.value, v.version)
        for name, t in old.items():  # deleted (or made again) by another broker
            now = self.topics.get(name)
            if now is None or now.id != t.id:
                for p in range(t.partitions):
                    self.store.forget_stream(self.basin, stream_name(name, p))
                if self.on_gone is not None:
                    self.on_gone(name)

    def _cache(self, name: str, raw: bytes, version: int) -> Topic:
        d = json.loads(raw)
        t = Topic(name, bytes.fromhex(d["id"]), d["partitions"], d["configs"],
                  d.get("created_ms", 0), version,
                  {int(p): r for p, r in d.get("replicas", {}).items()})
        old = self.topics.get(name)
        if old is not None:
            self.by_id.pop(old.id, None)
        self.topics[name] = t
        self.by_id[t.id] = t
        return t

    def get(self, name: str) -> Topic | None:
        return self.topics.get(name)

    async def create(self, name: str, partitions: int, configs: dict[str, str | None], *,
                     validate_only: bool = False,
                     channels: list[str] | None = None,
                     replicas: dict[int, list[int]] | None = None) -> Topic:
        """Create a topic (`channels`: each partition's channel, chosen by `place` if
        not given; `replicas`: the replica lists asked for, if more than the leader)."""
        check_topic_name(name)
        if partitions < 1:
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"Number of partitions must be larger than 0, got {partitions}")
        try:
            normalized = validate_topic_configs(configs)
        except ConfigError as e:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(e)) from None
        if name in self.topics:
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        topic = Topic(name, uuid.UUID(int=self.store.rng.getrandbits(128)).bytes, partitions,
                      normalized, self.store.clock.now_ms(), replicas=dict(replicas or {}))
        if validate_only:
            return topic
        try:
            topic.version = await self.metadata.create(PREFIX + name, topic.to_json())
        except VersionMismatch:
            await self.refresh(name)
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS,
                             f"Topic '{name}' already exists.") from None
        self.topics[name] = topic
        self.by_id[topic.id] = topic
        for p in range(partitions):
            await self.ensure_partition(topic, p, channels[p] if channels else None)
        return topic

    async def ensure_partition(self, topic: Topic, partition: int,
                               channel: str | None = None) -> None:
        if channel is None and self.place is not None:
            channel = self.place(topic.name, partition)
        try:
            await self.store.create_stream(self.basin, stream_name(topic.name, partition),
                                           stream_config(topic.configs), channel=channel)
        except AlreadyExists:
            pass

    async def refresh(self, name: str) -> Topic | None:
        row = await self.metadata.get(PREFIX + name)
        if row is None:
            old = self.topics.pop(name, None)
            if old is not None:
                self.by_id.pop(old.id, None)
            return None
        return self._cache(name, row.value, row.version)

    async def delete(self, name: str) -> Topic:
        topic = self.topics.get(name) or await self.refresh(name)
        if topic is None:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             "This server does not host this topic-partition.")
        try:
            await self.metadata.delete(PREFIX + name, topic.version)
        except VersionMismatch:
            await self.refresh(name)
            return await self.delete(name)
        self.topics.pop(name, None)
        self.by_id.pop(topic.id, None)
        for p in range(topic.partitions):
            try:
                await self.store.delete_stream(self.basin, stream_name(name, p))
            except StreamNotFound:
                pass
        # the log cleaner's checkpoints (broker/cleaner.py) and transactions' partition
        # states (broker/transactions.py), if any
        for prefix in ("kafka/cleaner/", "kafka/txn-partition/"):
            for key, _ in await self.metadata.list_prefix(f"{prefix}{topic.id.hex()}/"):
                await self.metadata.delete(key)
        return topic

    async def _update(self, topic: Topic, **changes) -> Topic:
        new = Topic(topic.name, topic.id, changes.get("partitions", topic.partitions),
                    changes.get("configs", topic.configs), topic.created_ms,
                    replicas=changes.get("replicas", topic.replicas))
        try:
            new.version = await self.metadata.put(PREFIX + topic.name, new.to_json(),
                                                  topic.version)
        except VersionMismatch:
            await self.refresh(topic.name)
            raise TopicError(ErrorCode.REQUEST_TIMED_OUT,
                             "the topic changed concurrently; retry") from None
        self.topics[new.name] = new
        self.by_id[new.id] = new
        return new

    async def set_replicas(self, name: str, partition: int, replicas: list[int]) -> None:
        """Record the replica list a reassignment asked for (retried on a race)."""
        for _ in range(10):
            topic = self.topics.get(name) or await self.refresh(name)
            if topic is None:
                return
            try:
                await self._update(topic, replicas={**topic.replicas, partition: replicas})
                return
            except TopicError:
                continue

    async def add_partitions(self, name: str, count: int, *, validate_only: bool = False) -> None:
        topic = self.topics.get(name)
        if topic is None:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             "This server does not host this topic-partition.")
        if count < topic.partitions:
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"The topic {name} currently has {topic.partitions} partition(s); "
                             f"{count} would not be an increase.")
        if count == topic.partitions:
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"Topic already has {topic.partitions} partition(s).")
        if validate_only:
            return
        topic = await self._update(topic, partitions=count)
        for p in range(count):
            await self.ensure_partition(topic, p)

    async def set_configs(self, name: str, configs: dict[str, str], *,
                          validate_only: bool = False) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             "This server does not host this topic-partition.")
        try:
            normalized = validate_topic_configs(configs)
        except ConfigError as e:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(e)) from None
        if validate_only:
            return topic
        topic = await self._update(topic, configs=normalized)
        patch = stream_config(normalized)
        for p in range(topic.partitions):
            try:
                await self.store.reconfigure_stream(self.basin, stream_name(name, p), patch)
            except StreamNotFound:
                await self.ensure_partition(topic, p)
        return topic
