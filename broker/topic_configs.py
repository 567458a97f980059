"""Kafka topic and broker configuration keys: defaults, types and validation."""
from __future__ import annotations

from dataclasses import dataclass


class ConfigError(ValueError):
    """A config name or value that Kafka would reject with INVALID_CONFIG."""


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One topic config: Kafka's default (as a string), type and allowed range/values."""

    name: str
    default: str
    type: str  # "long", "int", "boolean", "string", "double", "list"
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    sensitive: bool = False

    def validate(self, value: str | None) -> str:
        if value is None:
            raise ConfigError(f"{self.name}: null value")
        v = value.strip()
        if self.type in ("long", "int"):
            try:
                n = int(v)
            except ValueError:
                raise ConfigError(f"Invalid value {value} for configuration {self.name}: "
                                  f"Not a number of type {self.type.upper()}") from None
            if self.type == "int" and not -2**31 <= n < 2**31 or \
                    self.type == "long" and not -2**63 <= n < 2**63:
                raise ConfigError(f"Invalid value {value} for configuration {self.name}")
            if (self.low is not None and n < self.low) or (self.high is not None and n > self.high):
                raise ConfigError(f"Invalid value {value} for configuration {self.name}: "
                                  f"Value must be at least {self.low:g}")
            return str(n)
        if self.type == "double":
            try:
                x = float(v)
            except ValueError:
                raise ConfigError(f"Invalid value {value} for configuration {self.name}") \
                    from None
            if (self.low is not None and x < self.low) or (self.high is not None and x > self.high):
                raise ConfigError(f"Invalid value {value} for configuration {self.name}")
            return v
        if self.type == "boolean":
            if v.lower() not in ("true", "false"):
                raise ConfigError(f"Invalid value {value} for configuration {self.name}: "
                                  "Expected value to be either true or false")
            return v.lower()
        if self.type == "list":
            items = [x.strip() for x in v.split(",") if x.strip()]
            if self.choices and any(x not in self.choices for x in items):
                raise ConfigError(f"Invalid value {value} for configuration {self.name}")
            if self.choices and not items:
                raise ConfigError(f"Invalid value {value} for configuration {self.name}")
            return ",".join(items)
        if self.choices and v not in self.choices:
            raise ConfigError(f"Invalid value {value} for configuration {self.name}: "
                              f"String must be one of: {', '.join(self.choices)}")
        return v


_K = ConfigKey
TOPIC_CONFIGS: dict[str, ConfigKey] = {k.name: k for k in [
    _K("cleanup.policy", "delete", "list", choices=("delete", "compact")),
    _K("compression.type", "producer", "string",
       choices=("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")),
    _K("compression.gzip.level", "-1", "int", -1, 9),
    _K("compression.lz4.level", "9", "int", 1, 17),
    _K("compression.zstd.level", "3", "int", -131072, 22),
    _K("delete.retention.ms", "86400000", "long", 0),
    _K("file.delete.delay.ms", "60000", "long", 0),
    _K("flush.messages", "9223372036854775807", "long", 1),
    _K("flush.ms", "9223372036854775807", "long", 0),
    _K("follower.replication.throttled.replicas", "", "list"),
    _K("index.interval.bytes", "4096", "int", 0),
    _K("leader.replication.throttled.replicas", "", "list"),
    _K("local.retention.bytes", "-2", "long", -2),
    _K("local.retention.ms", "-2", "long", -2),
    _K("max.compaction.lag.ms", "9223372036854775807", "long", 1),
    _K("max.message.bytes", "1048588", "int", 0),
    _K("message.downconversion.enable", "true", "boolean"),
    _K("message.timestamp.after.max.ms", "9223372036854775807", "long", 0),
    _K("message.timestamp.before.max.ms", "9223372036854775807", "long", 0),
    _K("message.timestamp.difference.max.ms", "9223372036854775807", "long", 0),
    _K("message.timestamp.type", "CreateTime", "string", choices=("CreateTime", "LogAppendTime")),
    _K("min.cleanable.dirty.ratio", "0.5", "double", 0, 1),
    _K("min.compaction.lag.ms", "0", "long", 0),
    _K("min.insync.replicas", "1", "int", 1),
    _K("preallocate", "false", "boolean"),
    _K("remote.storage.enable", "false", "boolean"),
    _K("retention.bytes", "-1", "long"),
    _K("retention.ms", "604800000", "long", -1),
    _K("segment.bytes", "1073741824", "int", 14),
    _K("segment.index.bytes", "10485760", "int", 4),
    _K("segment.jitter.ms", "0", "long", 0),
    _K("segment.ms", "604800000", "long", 1),
    _K("unclean.leader.election.enable", "false", "boolean"),
]}

# The broker config each topic config falls back to, where that broker config has a default
# (Kafka's ServerTopicConfigSynonyms; retention.ms, segment.ms, segment.jitter.ms and flush.ms
# fall back to broker configs without a default, so Kafka reports no synonym for them).
TOPIC_SYNONYMS: dict[str, str] = {
    "cleanup.policy": "log.cleanup.policy",
    "compression.type": "compression.type",
    "compression.gzip.level": "compression.gzip.level",
    "compression.lz4.level": "compression.lz4.level",
    "compression.zstd.level": "compression.zstd.level",
    "delete.retention.ms": "log.cleaner.delete.retention.ms",
    "file.delete.delay.ms": "log.segment.delete.delay.ms",
    "flush.messages": "log.flush.interval.messages",
    "index.interval.bytes": "log.index.interval.bytes",
    "local.retention.bytes": "log.local.retention.bytes",
    "local.retention.ms": "log.local.retention.ms",
    "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
    "max.message.bytes": "message.max.bytes",
    "message.downconversion.enable": "log.message.downconversion.enable",
    "message.timestamp.after.max.ms": "log.message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms": "log.message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms": "log.message.timestamp.difference.max.ms",
    "message.timestamp.type": "log.message.timestamp.type",
    "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
    "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
    "min.insync.replicas": "min.insync.replicas",
    "preallocate": "log.preallocate",
    "retention.bytes": "log.retention.bytes",
    "segment.bytes": "log.segment.bytes",
    "segment.index.bytes": "log.index.size.max.bytes",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
}
assert set(TOPIC_SYNONYMS) <= set(TOPIC_CONFIGS)

# DescribeConfigs v3+ config types (Kafka's DescribeConfigsResponse.ConfigType).
CONFIG_TYPE_IDS: dict[str, int] = {"boolean": 1, "string": 2, "int": 3, "short": 4,
                                   "long": 5, "double": 6, "list": 7, "class": 8,
                                   "password": 9}

# Broker configs we report (DescribeConfigs on the broker resource): Kafka's defaults; the
# broker overrides those it derives from its own configuration. None is alterable.
BROKER_CONFIGS: dict[str, ConfigKey] = {k.name: k for k in [
    _K("advertised.listeners", "", "string"),
    _K("auto.create.topics.enable", "true", "boolean"),
    _K("broker.id", "-1", "int"),
    _K("compression.type", "producer", "string"),
    _K("default.replication.factor", "1", "int"),
    _K("delete.topic.enable", "true", "boolean"),
    _K("log.cleanup.policy", "delete", "list"),
    _K("log.message.timestamp.type", "CreateTime", "string"),
    _K("log.retention.bytes", "-1", "long"),
    _K("log.retention.hours", "168", "int"),
    _K("log.segment.bytes", "1073741824", "int"),
    _K("message.max.bytes", "1048588", "int"),
    _K("min.insync.replicas", "1", "int"),
    _K("node.id", "-1", "int"),
    _K("num.partitions", "1", "int"),
    _K("offsets.topic.replication.factor", "3", "short"),
    _K("socket.request.max.bytes", "104857600", "int"),
    _K("transaction.state.log.replication.factor", "3", "short"),
    _K("unclean.leader.election.enable", "false", "boolean"),
]}


def validate_topic_configs(configs: dict[str, str | None]) -> dict[str, str]:
    """Check names and values; returns the normalized non-default configs."""
    out = {}
    for name, value in configs.items():
        key = TOPIC_CONFIGS.get(name)
        if key is None:
            raise ConfigError(f"Unknown topic config name: {name}")
        out[name] = key.validate(value)
    return out


def effective(configs: dict[str, str], name: str) -> str:
    return configs.get(name, TOPIC_CONFIGS[name].default)
