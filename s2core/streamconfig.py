"""Basin and stream configuration, in the shape of S2's API (JSON-compatible dicts)."""
from __future__ import annotations

from dataclasses import dataclass, field

from s2core.errors import InvalidArgument

DEFAULT_RETENTION_S = 7 * 24 * 3600
TIMESTAMPING_MODES = ("client-prefer", "client-require", "arrival")
STORAGE_CLASSES = ("standard", "express")


@dataclass(slots=True)
class StreamConfig:
    """A stream's configuration. `retention_age_s` None means infinite retention."""

    storage_class: str = "express"
    retention_age_s: int | None = DEFAULT_RETENTION_S
    timestamping_mode: str = "client-prefer"
    timestamping_uncapped: bool = False
    delete_on_empty_min_age_s: int = 0

    def to_json(self) -> dict:
        retention = ({"infinite": {}} if self.retention_age_s is None
                     else {"age": self.retention_age_s})
        return {
            "storage_class": self.storage_class,
            "retention_policy": retention,
            "timestamping": {"mode": self.timestamping_mode,
                             "uncapped": self.timestamping_uncapped},
            "delete_on_empty": {"min_age_secs": self.delete_on_empty_min_age_s},
        }

    def merged(self, patch: dict | None) -> StreamConfig:
        """A copy with the fields present (non-null) in an S2-shaped `patch` applied."""
        out = StreamConfig(self.storage_class, self.retention_age_s, self.timestamping_mode,
                           self.timestamping_uncapped, self.delete_on_empty_min_age_s)
        if not patch:
            return out
        if not isinstance(patch, dict):
            raise InvalidArgument("stream config must be an object")
        unknown = set(patch) - {"storage_class", "retention_policy", "timestamping",
                                "delete_on_empty"}
        if unknown:
            raise InvalidArgument(f"unknown stream config fields: {sorted(unknown)}")
        if patch.get("storage_class") is not None:
            if patch["storage_class"] not in STORAGE_CLASSES:
                raise InvalidArgument(f"storage_class must be one of {STORAGE_CLASSES}")
            out.storage_class = patch["storage_class"]
        rp = patch.get("retention_policy")
        if rp is not None:
            if not isinstance(rp, dict) or len(rp) != 1:
                raise InvalidArgument("retention_policy must be {'age': secs} or "
                                      "{'infinite': {}}")
            if "age" in rp:
                age = rp["age"]
                if not isinstance(age, int) or isinstance(age, bool) or age <= 0:
                    raise InvalidArgument("retention_policy.age must be a positive integer")
                out.retention_age_s = age
            elif "infinite" in rp:
                out.retention_age_s = None
            else:
                raise InvalidArgument("retention_policy must have 'age' or 'infinite'")
        ts = patch.get("timestamping")
        if ts is not None:
            if not isinstance(ts, dict) or set(ts) - {"mode", "uncapped"}:
                raise InvalidArgument("timestamping takes 'mode' and 'uncapped'")
            if ts.get("mode") is not None:
                if ts["mode"] not in TIMESTAMPING_MODES:
                    raise InvalidArgument(f"timestamping.mode must be one of "
                                          f"{TIMESTAMPING_MODES}")
                out.timestamping_mode = ts["mode"]
            if ts.get("uncapped") is not None:
                if not isinstance(ts["uncapped"], bool):
                    raise InvalidArgument("timestamping.uncapped must be a boolean")
                out.timestamping_uncapped = ts["uncapped"]
        doe = patch.get("delete_on_empty")
        if doe is not None:
            age = doe.get("min_age_secs", 0) if isinstance(doe, dict) else None
            if not isinstance(age, int) or isinstance(age, bool) or age < 0:
                raise InvalidArgument("delete_on_empty.min_age_secs must be >= 0")
            out.delete_on_empty_min_age_s = age
        return out

    @classmethod
    def from_json(cls, d: dict | None) -> StreamConfig:
        return cls().merged(d)


@dataclass(slots=True)
class BasinConfig:
    """A basin's configuration."""

    default_stream_config: StreamConfig = field(default_factory=StreamConfig)
    create_stream_on_append: bool = False
    create_stream_on_read: bool = False

    def to_json(self) -> dict:
        return {"default_stream_config": self.default_stream_config.to_json(),
                "create_stream_on_append": self.create_stream_on_append,
                "create_stream_on_read": self.create_stream_on_read}

    def merged(self, patch: dict | None) -> BasinConfig:
        out = BasinConfig(self.default_stream_config, self.create_stream_on_append,
                          self.create_stream_on_read)
        if not patch:
            return out
        if not isinstance(patch, dict):
            raise InvalidArgument("basin config must be an object")
        unknown = set(patch) - {"default_stream_config", "create_stream_on_append",
                                "create_stream_on_read", "stream_cipher"}
        if unknown:
            raise InvalidArgument(f"unknown basin config fields: {sorted(unknown)}")
        if patch.get("default_stream_config") is not None:
            out.default_stream_config = self.default_stream_config.merged(
                patch["default_stream_config"])
        for k in ("create_stream_on_append", "create_stream_on_read"):
            if patch.get(k) is not None:
                if not isinstance(patch[k], bool):
                    raise InvalidArgument(f"{k} must be a boolean")
                setattr(out, k, patch[k])
        return out

    @classmethod
    def from_json(cls, d: dict | None) -> BasinConfig:
        return cls().merged(d)
