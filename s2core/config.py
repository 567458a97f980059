"""Configuration: TOML file < environment < flags, with the embedded default built in."""
from __future__ import annotations

import copy
import os
import ssl
import tomllib
from pathlib import Path
from typing import Any

from s2core.background import PRIORITIES

# a link to config/s2kafka.toml, shipped as package data
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "default.toml"

SHORT_ENV = {
    "S2KAFKA_DATA_DIR": ("server", "data_dir"),
    "S2KAFKA_KAFKA_LISTEN": ("server", "kafka_listen"),
    "S2KAFKA_HTTP_LISTEN": ("server", "http_listen"),
}


class ConfigError(ValueError):
    """The configuration is invalid; the message says which key and why."""


def _builtin_defaults() -> dict[str, Any]:
    with open(DEFAULT_CONFIG_PATH, "rb") as f:
        return tomllib.load(f)


def _coerce(section: str, key: str, raw: str, like: Any) -> Any:
    try:
        if isinstance(like, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(like, int):
            return int(raw)
        if isinstance(like, float):
            return float(raw)
        if isinstance(like, list):
            return [x for x in (s.strip() for s in raw.split(",")) if x]
    except ValueError:
        raise ConfigError(f"{section}.{key}: cannot parse {raw!r} as "
                          f"{type(like).__name__}") from None
    return raw


def _set(cfg: dict, section: str, key: str, raw: Any) -> None:
    if section not in cfg or key not in cfg[section]:
        raise ConfigError(f"unknown configuration key {section}.{key}")
    like = cfg[section][key]
    cfg[section][key] = _coerce(section, key, raw, like) if isinstance(raw, str) else raw


def load_config(path: str | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge the built-in defaults, a TOML file, the environment and `overrides`
    ({"section.key": value}); then expand "{data_dir}" and check the result."""
    cfg = copy.deepcopy(_builtin_defaults())
    if path:
        with open(path, "rb") as f:
            for section, values in tomllib.load(f).items():
                if not isinstance(values, dict):
                    raise ConfigError(f"top-level key {section!r} must be a table")
                for key, value in values.items():
                    _set(cfg, section, key, value)
    env = os.environ if env is None else env
    for name, (section, key) in SHORT_ENV.items():
        if name in env:
            _set(cfg, section, key, env[name])
    for name, value in env.items():
        if name.startswith("S2KAFKA_") and "__" in name:
            section, key = name[len("S2KAFKA_"):].lower().split("__", 1)
            _set(cfg, section, key, value)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        _set(cfg, section, key, value)
    data_dir = str(Path(cfg["server"]["data_dir"]).resolve())
    cfg["server"]["data_dir"] = data_dir
    for section in cfg.values():
        for key, value in section.items():
            if isinstance(value, str):
                section[key] = value.replace("{data_dir}", data_dir)
            elif isinstance(value, list):
                section[key] = [v.replace("{data_dir}", data_dir) if isinstance(v, str) else v
                                for v in value]
    _check(cfg)
    return cfg


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def tls_server_context(cert_file: str, key_file: str, client_ca_file: str | None = None,
                       what: str = "TLS") -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) from PEM files; with `client_ca_file`,
    clients must present a certificate signed by one of its CAs. ConfigError if a file
    cannot be read or the key does not match the certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
        if client_ca_file:
            ctx.load_verify_locations(cafile=client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{what} TLS files: {e}") from e
    return ctx


def _check(cfg: dict) -> None:
    parse_hostport(cfg["server"]["kafka_listen"], "server.kafka_listen")
    parse_hostport(cfg["server"]["http_listen"], "server.http_listen")
    srv = cfg["server"]
    for side in ("kafka", "http"):
        if bool(srv[f"{side}_tls_cert_file"]) != bool(srv[f"{side}_tls_key_file"]):
            raise ConfigError(f"server.{side}_tls_cert_file and server.{side}_tls_key_file "
                              "go together: set both (TLS) or neither (plaintext)")
    if srv["kafka_tls_client_ca_file"] and not srv["kafka_tls_cert_file"]:
        raise ConfigError("server.kafka_tls_client_ca_file needs server.kafka_tls_cert_file "
                          "and server.kafka_tls_key_file (client certificates need TLS)")
    for entry in srv["kafka_sasl_users"]:
        user, sep, password = str(entry).partition(":")
        if not sep or not user or not password:
            raise ConfigError("server.kafka_sasl_users: each entry is \"user:password\" "
                              "with both non-empty")
    mechanisms = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER")
    if not srv["kafka_sasl_mechanisms"] or \
            any(m not in mechanisms for m in srv["kafka_sasl_mechanisms"]):
        raise ConfigError(f"server.kafka_sasl_mechanisms: one or more of {list(mechanisms)}")
    for p in srv["kafka_super_users"]:
        kind, sep, name = str(p).partition(":")
        if not sep or not kind or not name:
            raise ConfigError(f"server.kafka_super_users: {p!r} is not a principal "
                              "(\"User:name\")")
    if srv["kafka_oauthbearer_clock_skew_s"] < 0:
        raise ConfigError("server.kafka_oauthbearer_clock_skew_s must be >= 0")
    for side in ("kafka", "http"):  # (unreadable or mismatched files: an error now)
        if srv[f"{side}_tls_cert_file"]:
            tls_server_context(srv[f"{side}_tls_cert_file"], srv[f"{side}_tls_key_file"],
                               srv.get(f"{side}_tls_client_ca_file") or None, f"server.{side}")
    if cfg["server"]["background_cpu_priority"] not in PRIORITIES:
        raise ConfigError(f"server.background_cpu_priority must be one of {PRIORITIES}")
    wal = cfg["wal"]
    if not wal["replicas"]:
        raise ConfigError("wal.replicas must list at least one replica")
    if not 1 <= wal["write_quorum"] <= len(wal["replicas"]):
        raise ConfigError("wal.write_quorum must be between 1 and the number of replicas")
    if wal["chunk_target_bytes"] < 1:
        raise ConfigError("wal.chunk_target_bytes must be >= 1")
    if wal["max_inflight_chunks"] < 0:
        raise ConfigError("wal.max_inflight_chunks must be >= 0 (0: automatic)")
    if wal["log_file_bytes"] < 4096:
        raise ConfigError("wal.log_file_bytes must be >= 4096")
    if cfg["kafka"]["group_initial_rebalance_delay_ms"] < 0:
        raise ConfigError("kafka.group_initial_rebalance_delay_ms must be >= 0")
    if cfg["kafka"]["producer_id_expiration_ms"] < 1:
        raise ConfigError("kafka.producer_id_expiration_ms must be >= 1")
    if cfg["kafka"]["log_cleaner_interval_s"] <= 0:
        raise ConfigError("kafka.log_cleaner_interval_s must be > 0")
    srv = cfg["server"]
    if not 0 <= srv["node_id"] <= 2**31 - 1:
        raise ConfigError("server.node_id must be between 0 and 2147483647")
    if srv["cluster_heartbeat_interval_s"] <= 0:
        raise ConfigError("server.cluster_heartbeat_interval_s must be > 0")
    if srv["cluster_session_timeout_s"] < 2 * srv["cluster_heartbeat_interval_s"]:
        raise ConfigError("server.cluster_session_timeout_s must be at least twice "
                          "server.cluster_heartbeat_interval_s")
    if srv["cluster"] and cfg["metadata"]["url"].startswith("memory:"):
        raise ConfigError("server.cluster needs a metadata.url the brokers share "
                          "(sqlite:// on one host, postgresql:// or dynamodb://)")
    if cfg["segments"]["orphan_sweep_interval_s"] < 0:
        raise ConfigError("segments.orphan_sweep_interval_s must be >= 0 (0: never)")
    if cfg["kafka"]["quota_window_num"] < 2:
        raise ConfigError("kafka.quota_window_num must be >= 2")
    if cfg["kafka"]["quota_window_size_s"] <= 0:
        raise ConfigError("kafka.quota_window_size_s must be > 0")
    if cfg["kafka"]["log_cleaner_dedupe_buffer_bytes"] < 1024:
        raise ConfigError("kafka.log_cleaner_dedupe_buffer_bytes must be >= 1024")
    tail = cfg["tail"]
    if tail["memory_bound_bytes"] < 2 * cfg["limits"]["max_append_bytes"]:
        raise ConfigError("tail.memory_bound_bytes must be at least twice "
                          "limits.max_append_bytes")
    if not 0 < tail["keep_in_memory_fraction"] <= 1:
        raise ConfigError("tail.keep_in_memory_fraction must be in (0, 1]")
    if tail["offload_min_stream_bytes"] < 0:
        raise ConfigError("tail.offload_min_stream_bytes must be >= 0")
