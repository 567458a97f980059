"""Static checks of docker/Dockerfile and docker/compose.yaml (no Docker engine needed).

They cannot be built here, so this parses them: Dockerfile instructions (base image,
non-root USER, /data VOLUME, EXPOSE, HEALTHCHECK on /health, the serve CMD) and the
compose file (services, build path, that the broker's S2KAFKA_* environment is accepted by
the real config loader, and that its metadata URL names the postgres service).
"""
from __future__ import annotations

import importlib
import json
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def _repo_module(name: str):
    """Import a module of the repository's packages. pytest's default import mode puts
    tests/ first on sys.path for this file, where tests/s2core/ (test files, no
    __init__.py) would shadow the real s2core as a namespace package."""
    top = name.split(".")[0]
    pkg = sys.modules.get(top)
    if pkg is not None and getattr(pkg, "__file__", None) is None:
        for mod in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[mod]
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT))


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions((DOCKER / "Dockerfile").read_text())


def _all(instrs, name):
    return [args for word, args in instrs if word == name]


def test_dockerfile_base_and_install(instructions):
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert len(_all(instructions, "FROM")) == 1
    runs = " ".join(_all(instructions, "RUN"))
    assert "pip install" in runs and '".[fast]"' in runs
    for args in _all(instructions, "COPY"):
        *sources, _dest = shlex.split(args)
        for src in sources:
            assert (ROOT / src).exists(), f"COPY source {src} missing from the repo"
    # the image must carry the package code: pyproject's packages are copied
    copied = {shlex.split(a)[0] for a in _all(instructions, "COPY")}
    assert {"pyproject.toml", "s2core", "broker"} <= copied


def test_dockerfile_runs_as_non_root_with_data_volume(instructions):
    users = _all(instructions, "USER")
    assert users, "no USER: the server would run as root"
    final_user = users[-1].split(":")[0]
    assert final_user not in ("root", "0")
    # USER comes after the last RUN (installs need root, the server must not)
    words = [w for w, _ in instructions]
    assert max(i for i, w in enumerate(words) if w == "USER") > \
        max(i for i, w in enumerate(words) if w == "RUN")
    volumes = _all(instructions, "VOLUME")
    assert volumes and "/data" in (json.loads(volumes[-1]) if volumes[-1].startswith("[")
                                   else volumes[-1].split())
    runs = " ".join(_all(instructions, "RUN"))
    assert "useradd" in runs and "chown" in runs and "/data" in runs


def test_dockerfile_ports_healthcheck_cmd(instructions):
    exposed = {p.split("/")[0] for args in _all(instructions, "EXPOSE") for p in args.split()}
    assert {"9092", "8080"} <= exposed
    (health,) = _all(instructions, "HEALTHCHECK")
    assert "http://127.0.0.1:8080/health" in health
    assert "CMD" in health.split()
    hc_cmd = exec_form(health[health.index("["):])
    assert hc_cmd[0] == "python"  # the slim image has no curl
    compile(hc_cmd[2], "<healthcheck>", "exec")
    (cmd,) = _all(instructions, "CMD")
    assert exec_form(cmd) == ["s2kafka", "serve", "--data-dir", "/data", "--kafka-listen",
                              "0.0.0.0:9092", "--http-listen", "0.0.0.0:8080"]


def test_dockerfile_cmd_is_accepted_by_the_cli(instructions):
    argv = exec_form(_all(instructions, "CMD")[0])[1:]
    args = _repo_module("broker.cli")._parser().parse_args(argv)
    cfg = _repo_module("s2core.config").load_config(None, env={}, overrides={
        "server.data_dir": args.data_dir, "server.kafka_listen": args.kafka_listen,
        "server.http_listen": args.http_listen})
    assert cfg["server"]["data_dir"] == "/data"
    assert cfg["metadata"]["url"] == "sqlite:///data/metadata.db"


def test_dockerignore_keeps_what_the_image_copies():
    lines = [ln.strip() for ln in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    for keep in ("!pyproject.toml", "!s2core/**", "!broker/**"):
        assert keep in lines


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_services(compose):
    services = compose["services"]
    assert {"broker", "s3", "postgres"} <= set(services)
    broker = services["broker"]
    build = broker["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == \
        (DOCKER / "Dockerfile").resolve()
    assert set(broker["depends_on"]) == {"s3", "postgres"}
    for dep in broker["depends_on"].values():
        assert dep["condition"] == "service_healthy"
    for name in ("s3", "postgres"):
        assert "healthcheck" in services[name]
    ports = {str(p).rsplit(":", 1)[-1] for p in broker["ports"]}
    assert {"9092", "8080"} <= ports
    assert any(str(v).endswith(":/data") for v in broker["volumes"])
    named = set(compose.get("volumes") or {})
    for svc in services.values():
        for v in svc.get("volumes", []):
            src = str(v).split(":", 1)[0]
            if not src.startswith((".", "/")):
                assert src in named, f"volume {src} is not declared"


def test_compose_broker_metadata_is_the_postgres_service(compose):
    load_config = _repo_module("s2core.config").load_config
    open_metadata_store = _repo_module("s2core.metadata").open_metadata_store
    postgres_store = _repo_module("s2core.metadata.postgres").PostgresMetadataStore

    env = {k: str(v) for k, v in compose["services"]["broker"]["environment"].items()}
    url = load_config(None, env={k: v for k, v in env.items() if k.startswith("S2KAFKA_")},
                      overrides={"server.data_dir": "/data"})["metadata"]["url"]
    parts = urlsplit(url)
    assert parts.scheme == "postgresql" and parts.hostname == "postgres"
    pg = compose["services"]["postgres"]
    pgenv = pg["environment"]
    assert (parts.username, parts.password) == (pgenv["POSTGRES_USER"],
                                                pgenv["POSTGRES_PASSWORD"])
    assert parts.path == "/" + pgenv["POSTGRES_DB"]
    assert parts.port == 5432 and any(str(p).endswith(":5432") for p in pg["ports"])
    assert "postgres" in compose["services"]["broker"]["depends_on"]
    # accepted by the real factory (it connects on first use, so nothing connects here)
    assert isinstance(open_metadata_store(url), postgres_store)


def test_compose_broker_environment_is_valid_config(compose):
    load_config = _repo_module("s2core.config").load_config
    open_object_store = _repo_module("s2core.objstore").open_object_store

    env = {k: str(v) for k, v in compose["services"]["broker"]["environment"].items()}
    s2env = {k: v for k, v in env.items() if k.startswith("S2KAFKA_")}
    assert "S2KAFKA_SEGMENTS__URL" in s2env and "S2KAFKA_WAL__REPLICAS" in s2env
    cfg = load_config(None, env=s2env, overrides={"server.data_dir": "/data"})
    replicas = cfg["wal"]["replicas"]
    assert len(replicas) == 3 and all(r.startswith("s3://") for r in replicas)
    assert len(set(replicas)) == 3
    assert 1 <= cfg["wal"]["write_quorum"] <= len(replicas)
    assert cfg["server"]["kafka_advertised"].split(":")[0].count(".") == 3  # IPv4
    # every object-store URL is accepted by the real constructor (no connection is made)
    for url in [*replicas, cfg["segments"]["url"]]:
        store = open_object_store(url)
        assert store.bucket == "s2kafka"
    # credentials for the S3 client are present and match the S3 server's root user
    s3env = compose["services"]["s3"]["environment"]
    assert env["AWS_ACCESS_KEY_ID"] == s3env["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == s3env["MINIO_ROOT_PASSWORD"]


def test_compose_brokers_form_one_cluster(compose):
    """Every broker service is in cluster mode with its own node id, advertised port and
    data volume, on the same metadata and bucket."""
    load_config = _repo_module("s2core.config").load_config
    brokers = {n: svc for n, svc in compose["services"].items() if n.startswith("broker")}
    assert len(brokers) >= 2
    cfgs = []
    for svc in brokers.values():
        env = {k: str(v) for k, v in svc["environment"].items() if k.startswith("S2KAFKA_")}
        cfgs.append(load_config(None, env=env, overrides={"server.data_dir": "/data"}))
    assert all(c["server"]["cluster"] for c in cfgs)
    assert len({c["server"]["node_id"] for c in cfgs}) == len(cfgs)
    assert len({c["server"]["kafka_advertised"] for c in cfgs}) == len(cfgs)
    assert len({c["metadata"]["url"] for c in cfgs}) == 1
    assert len({c["segments"]["url"] for c in cfgs}) == 1
    volumes = [str(v).split(":", 1)[0] for svc in brokers.values() for v in svc["volumes"]]
    assert len(set(volumes)) == len(volumes)
