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
    _K("follower.replication.throttled.replicas", "", "string"),
    _K("index.interval.bytes", "4096", "int", 0),
    _K("leader.replication.throttled.replicas", "", "string"),
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

# Read-only broker configs we report (DescribeConfigs on the broker resource).
BROKER_CONFIGS: dict[str, str] = {
    "auto.create.topics.enable": "true",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "message.max.bytes": "1048588",
    "log.retention.ms": "604800000",
    "log.cleanup.policy": "delete",
    "compression.type": "producer",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "group.initial.rebalance.delay.ms": "0",
    "log.message.timestamp.type": "CreateTime",
}


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
