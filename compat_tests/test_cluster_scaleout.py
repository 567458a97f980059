"""Several brokers on the scale-out storage, as docker/compose.yaml runs them: two broker
processes in one cluster with their WAL replicas (quorum 2 of 3) and segments on a real S3
API server (moto) and their metadata in a real PostgreSQL. A broker killed with SIGKILL
has its WAL recovered from S3 by the other, which serves its partitions; nothing acked by
either is lost or duplicated, and the killed broker takes its partitions back."""
from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "s2core"))

from test_cluster import Cluster, consume, create, produce  # noqa: E402
from test_metadata_postgres import fresh_table, pg_server  # noqa: E402,F401 - fixture
from test_objstore_contract import moto_endpoint  # noqa: E402,F401 - fixture

from brokerproc import start_broker  # noqa: E402


class ScaleOut(Cluster):
    def __init__(self, root: str, md_url: str, s3: str, n: int = 2) -> None:
        bucket = f"cl-{uuid.uuid4().hex[:12]}"

        def url(prefix: str) -> str:
            return (f"s3://{bucket}/{prefix}?endpoint_url={s3}&region=us-east-1"
                    "&create_bucket=true")
        self.extra = ["--set", f"metadata.url={md_url}",
                      "--set", "wal.replicas=" + ",".join(url(f"wal/r{i}") for i in range(3)),
                      "--set", "wal.write_quorum=2", "--set", f"segments.url={url('seg')}",
                      "--set", "server.cluster=true",
                      "--set", "server.cluster_heartbeat_interval_s=0.3",
                      "--set", "server.cluster_session_timeout_s=2",
                      "--set", "tail.offload_interval_s=0.2"]
        self.root = root
        self.brokers = [self._start(i) for i in range(n)]
        self.bootstrap = ",".join(b.bootstrap for b in self.brokers)
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self.wait_for(lambda: len(self.admin.list_topics(timeout=10).brokers) == n)
        time.sleep(1.0)

    def _start(self, i: int, port: int = 0):
        return start_broker(f"{self.root}/b{i}", kafka_port=port,
                            extra=[*self.extra, "--set", f"server.node_id={i}"])

    def restart(self, i: int) -> None:
        port = int(self.brokers[i].bootstrap.rsplit(":", 1)[1])
        self.brokers[i] = self._start(i, port)


def test_failover_on_s3_and_postgres(tmp_path, pg_server, moto_endpoint,  # noqa: F811
                                     monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    c = ScaleOut(str(tmp_path), pg_server.url(query=f"table={fresh_table()}"), moto_endpoint)
    try:
        topic = f"so-{uuid.uuid4().hex[:6]}"
        create(c, topic, 4)
        leaders = c.leaders(topic)
        assert set(leaders.values()) == {0, 1}, leaders
        acked: list = []
        produce(c, topic, 0, 200, acked)
        c.brokers[1].kill()
        produce(c, topic, 200, 200, acked)  # broker 0 recovered broker 1's WAL from S3
        assert set(c.leaders(topic).values()) == {0}
        c.restart(1)
        c.wait_for(lambda: c.leaders(topic) == leaders)
        produce(c, topic, 400, 100, acked)
        got = consume(c, topic, "so-readers", len(acked))
        assert sorted(got) == sorted(acked) and len(set(got)) == 500
    finally:
        codes = c.stop()
    assert codes == [0, 0], [b.log()[-3000:] for b in c.brokers]
