"""Starting and stopping a real `s2kafka serve` process for black-box tests."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"s2kafka ready kafka=(\S+):(\d+) http=(\S+):(\d+)")


@dataclass
class BrokerProcess:
    """A running broker: addresses, data directory and the process itself."""

    proc: subprocess.Popen
    data_dir: str
    bootstrap: str
    http: str
    log_path: str
    args: list

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> BrokerProcess:
        """Start again on the same data directory and the same Kafka port."""
        self.stop()
        port = self.bootstrap.rsplit(":", 1)[1]
        return start_broker(self.data_dir, kafka_port=int(port), extra=self.args)

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")


def start_broker(data_dir: str, kafka_port: int = 0, extra: list | None = None,
                 timeout: float = 60) -> BrokerProcess:
    extra = list(extra or [])
    log_path = os.path.join(data_dir, f"broker-{time.time_ns()}.log")
    os.makedirs(data_dir, exist_ok=True)
    log = open(log_path, "w")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "broker.cli", "serve", "--data-dir", data_dir,
            "--kafka-listen", f"127.0.0.1:{kafka_port}", "--http-listen", "127.0.0.1:0",
            *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                            cwd=str(ROOT))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"broker exited with {proc.returncode}: "
                                   f"{Path(log_path).read_text()[-3000:]}")
            continue
        m = READY.search(line)
        if m:
            return BrokerProcess(proc, data_dir, f"{m[1]}:{m[2]}", f"{m[3]}:{m[4]}",
                                 log_path, extra)
    proc.kill()
    raise RuntimeError("broker did not become ready in time")


def find_coordinators(bootstrap: str, keys: list[str], key_type: int = 0) -> dict[str, int]:
    """FindCoordinator (v4, several keys) asked of the first broker in `bootstrap`: key ->
    node id of its coordinator (-1 when it has none). Kafka's clients keep this to
    themselves; tests need it to kill the right broker."""
    import socket
    import struct

    sys.path.insert(0, str(ROOT))
    from broker.protocol import decode_response, encode_request
    from broker.protocol.messages import _index
    from broker.protocol.messages.find_coordinator_request import FindCoordinatorRequest

    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        header = _index.request_header.RequestHeader(10, 4, 1, "test")
        s.sendall(b"".join(encode_request(header, FindCoordinatorRequest(
            key_type=key_type, coordinator_keys=keys))))
        size = struct.unpack(">i", _read(s, 4))[0]
        _, resp = decode_response(memoryview(_read(s, size)), 10, 4)
    return {c.key: c.node_id for c in resp.coordinators}


def _read(s, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out
