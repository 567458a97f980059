"""Config checks for the WAL and group keys added with decision 0008."""
import pytest

from s2core.config import ConfigError, load_config


def test_embedded_default_is_one_synced_local_log(tmp_path):
    cfg = load_config(env={}, overrides={"server.data_dir": str(tmp_path)})
    assert cfg["wal"]["replicas"] == [f"log://{tmp_path}/wal/r0"]
    assert cfg["wal"]["write_quorum"] == 1
    assert cfg["wal"]["log_file_bytes"] == 16 * 1024 * 1024
    assert cfg["kafka"]["group_initial_rebalance_delay_ms"] == 0
    assert cfg["kafka"]["producer_id_expiration_ms"] == 86_400_000  # Kafka's default


def test_replicas_on_other_disks_from_a_flag(tmp_path):
    cfg = load_config(env={}, overrides={"server.data_dir": str(tmp_path),
                                         "wal.replicas": "log:///d1/w,log:///d2/w,log:///d3/w",
                                         "wal.write_quorum": "2"})
    assert cfg["wal"]["replicas"] == ["log:///d1/w", "log:///d2/w", "log:///d3/w"]
    assert cfg["wal"]["write_quorum"] == 2


@pytest.mark.parametrize("key,value,message", [
    ("wal.log_file_bytes", "1000", "log_file_bytes"),
    ("kafka.group_initial_rebalance_delay_ms", "-1", "group_initial_rebalance_delay_ms"),
    ("wal.write_quorum", "2", "write_quorum"),
    ("tail.offload_min_stream_bytes", "-1", "offload_min_stream_bytes"),
    ("server.background_cpu_priority", "lowest", "background_cpu_priority"),
    ("kafka.producer_id_expiration_ms", "0", "producer_id_expiration_ms"),
    ("server.kafka_tls_cert_file", "/etc/ssl/cert.pem", "kafka_tls_key_file"),
    ("server.http_tls_key_file", "/etc/ssl/key.pem", "http_tls_cert_file"),
    ("server.kafka_tls_client_ca_file", "/etc/ssl/ca.pem", "kafka_tls_client_ca_file"),
])
def test_bad_values_are_refused_with_the_key_named(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides={"server.data_dir": str(tmp_path), key: value})


def test_tls_files_that_cannot_be_loaded_are_a_configuration_error(tmp_path):
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="server.kafka TLS files"):
        load_config(env={}, overrides={"server.data_dir": str(tmp_path),
                                       "server.kafka_tls_cert_file": str(tmp_path / "cert.pem"),
                                       "server.kafka_tls_key_file": str(tmp_path / "no.key")})
