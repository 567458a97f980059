#!/usr/bin/env python3
"""Run librdkafka's own test suite (its `tests/test-runner`) against a broker.

Normally called through `.ci/librdkafka.sh`, which builds the runner first. Each test
number runs in its own `test-runner -Q -E -L -K -p1` process (a failing test aborts the
runner) with TESTS=NNNN, TEST_KAFKA_VERSION=3.9.0 and a generated test.conf holding
`bootstrap.servers`, under a per-test timeout. One line per number:

    PASS 0001
    FAIL 0002 (reason)
    SKIP 0049 (every test of the number was skipped: ...)

and a closing `N passed, M failed[, K skipped]`.

Modes:
  gate        run allowlist.txt; exit 1 only when an allowlisted number fails
  candidates  run candidates.txt; print which pass; `--update-allowlist` writes the
              passing numbers (sorted) to allowlist.txt; exit 0 unless the broker broke
  run NUM...  run the given numbers; exit 1 when any fails

Broker: `--broker HOST:PORT` (or $KAFKA_BOOTSTRAP), else `--start s2kafka|tansu` starts one
via bench/peers.py (default: s2kafka). A broker that this script started and that dies
mid-run is restarted for the next number (the number it died in fails).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "bench"))

import peers  # bench/peers.py

# With TEST_CONSUMER_GROUP_PROTOCOL=consumer the suite's consumers use KIP-848 groups; that
# mode has its own allowlist.
ALLOWLIST = HERE / ("allowlist-consumer.txt"
                    if os.environ.get("TEST_CONSUMER_GROUP_PROTOCOL") == "consumer"
                    else "allowlist.txt")
CANDIDATES = HERE / "candidates.txt"
DEFAULT_BUILD_DIR = Path(os.environ.get(
    "LIBRDKAFKA_BUILD_DIR", Path.home() / ".cache" / "s2kafka" / "librdkafka"))
RUNNER_FLAGS = ["-Q", "-E", "-L", "-K", "-p1"]
# The cluster librdkafka's suite is written for: its tests/scenarios/default.json has
# auto_create_topics=true, num_partitions=4; tests produce to partitions 0..3 of topics
# they let the broker auto-create.
S2KAFKA_SUITE_ARGS = ["--set", "kafka.auto_create_partitions=4"]
KAFKA_VERSION = "3.9.0"

_ANSI = re.compile(r"\x1b\[[0-9;]*m|\x1b\(B")
_NUM = re.compile(r"^\d{4}$")
_CRASH_SIGNALS = {-signal.SIGSEGV, -signal.SIGBUS, -signal.SIGFPE, -signal.SIGILL}


def read_list(path: Path) -> list[str]:
    """Test numbers in a list file: one per line, `#` comments and blank lines ignored."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not _NUM.match(line):
            raise ValueError(f"{path}: not a 4-digit test number: {line!r}")
        out.append(line)
    return out


@dataclass
class Result:
    num: str
    status: str  # PASS, FAIL, SKIP
    reason: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        return f"{self.status} {self.num}" + (f" ({self.reason})" if self.reason else "")


def parse_report(path: Path, num: str) -> dict[str, dict]:
    """{test name: entry} of the runner's TEST_REPORT json for tests of number `num`."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        # failstr/extra are not JSON-escaped by the runner: fall back to a regex
        data = {"tests": {m.group(1): {"state": m.group(2)} for m in re.finditer(
            r'"name": "([^"]+)", "state": "([A-Z]+)"', text)}}
    tests = data.get("tests", {}) if isinstance(data, dict) else {}
    return {k: v for k, v in tests.items() if k.startswith(num + "_")}


def failure_reason(output: str, num: str) -> str:
    """A one-line reason from test-runner output: the first failed (sub)test and its
    message, else the summary row, else the last line."""
    lines = _ANSI.sub("", output).splitlines()
    for i, line in enumerate(lines):  # ### Test "0011_x (subtest:629)" failed at f.c:718:..
        m = re.match(r'### Test "([^"]*)" failed at ([^:]+:\d+)', line)
        if m and m.group(1) != "<MAIN>":
            msg = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return _squash(f"{m.group(1)} at {m.group(2)}: {msg}".rstrip(": "))
    for line in lines:  # summary row: | 0002_unkpart | FAILED | 1.2s | why
        m = re.match(rf"\|\s*({num}_\S+)\s*\|\s*FAILED\s*\|[^|]*\|\s*(.*)", line)
        if m and m.group(2).strip():
            return _squash(f"{m.group(1)}: {m.group(2)}")
    for line in lines:
        if line.startswith("### Test") and "failed" in line:
            return _squash(line.strip("# "))
    for line in reversed(lines):
        if line.strip():
            return _squash(line)
    return "no output"


def _squash(s: str, limit: int = 200) -> str:
    s = " ".join(s.replace("(", "[").replace(")", "]").split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


class BrokerHandle:
    """An external address, or a broker this script starts (and restarts if it dies)."""

    def __init__(self, address: str | None, kind: str, log_dir: Path,
                 s2kafka_args: list[str]):
        self.address, self.kind, self.log_dir = address, kind, log_dir
        self.s2kafka_args = s2kafka_args
        self.proc: peers.BrokerProcess | None = None
        self.starts = 0

    def ensure(self) -> str:
        if self.address and self.proc is None:
            return self.address
        if self.proc is None or not self.proc.alive():
            if self.proc is not None:
                self.proc.stop()
            self.starts += 1
            log = str(self.log_dir / f"{self.kind}-{self.starts}.log")
            if self.kind == "tansu":
                self.proc = peers.start_tansu(log_path=log)
            else:
                self.proc = peers.start_s2kafka(log_path=log, extra_args=self.s2kafka_args)
            print(f"# started {self.kind} at {self.proc.bootstrap} (log {log})", flush=True)
        return self.proc.bootstrap

    def died(self) -> bool:
        return self.proc is not None and not self.proc.alive()

    def restart(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def write_conf(path: Path, bootstrap: str, extra: list[str]) -> None:
    lines = [f"bootstrap.servers={bootstrap}"]
    lines += [e for e in extra if e.strip()]
    mult = os.environ.get("LIBRDKAFKA_TEST_TIMEOUT_MULTIPLIER")
    if mult:
        lines.append(f"test.timeout.multiplier={mult}")
    path.write_text("\n".join(lines) + "\n")


def run_one(num: str, runner: Path, conf: Path, log_dir: Path, timeout: float,
            tag: str = "") -> Result:
    report = log_dir / f"{num}{tag}.report.json"
    with contextlib.suppress(OSError):
        report.unlink()
    env = dict(os.environ)
    env.update({"TESTS": num, "TEST_KAFKA_VERSION": KAFKA_VERSION,
                "RDKAFKA_TEST_CONF": str(conf), "TEST_REPORT": str(report)})
    src = runner.parent.parent  # the built librdkafka, ahead of any system librdkafka.so
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        x for x in (str(src / "src"), str(src / "src-cpp"), env.get("LD_LIBRARY_PATH")) if x)
    env.pop("SUBTESTS", None)
    env.pop("TESTS_SKIP", None)
    t0 = time.monotonic()
    log_path = log_dir / f"{num}{tag}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(runner), *RUNNER_FLAGS], cwd=str(runner.parent), env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Result(num, "FAIL", f"timeout after {timeout:.0f}s",
                          time.monotonic() - t0)
    secs = time.monotonic() - t0
    output = log_path.read_text(errors="replace")
    tests = parse_report(report, num)
    if rc != 0:
        if rc in _CRASH_SIGNALS:  # (a failed test aborts: SIGABRT, a timed-out one: KILL)
            reason = f"killed by signal {-rc}: " + failure_reason(output, num)
        else:
            reason = failure_reason(output, num)
        return Result(num, "FAIL", reason, secs)
    states = {name: t.get("state") for name, t in tests.items()}
    if any(s == "FAILED" for s in states.values()):
        return Result(num, "FAIL", failure_reason(output, num), secs)
    if states and all(s == "SKIPPED" for s in states.values()):
        return Result(num, "SKIP", "all skipped: " + skip_reason(output, num), secs)
    if not any(s == "PASSED" for s in states.values()) and "PASSED" not in output:
        return Result(num, "SKIP", "no test ran", secs)
    return Result(num, "PASS", "", secs)


def skip_reason(output: str, num: str) -> str:
    """Why a number's tests were skipped; a broker test's own reason (e.g. a missing
    build dependency) wins over the -L filter that skips its local siblings."""
    reasons = []
    for line in _ANSI.sub("", output).splitlines():
        m = re.match(rf"\|\s*({num}_\S+)\s*\|\s*SKIPPED\s*\|[^|]*\|\s*(.*)", line)
        if m and m.group(2).strip():
            reasons.append(m.group(2).strip())
    for r in reasons:
        if r != "Filtered due to negative test flags":
            return _squash(r, 120)
    if reasons:
        return _squash(reasons[0], 120)
    return "filtered silently: needs another test scenario, e.g. noautocreate"


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def find_runner(build_dir: Path) -> Path:
    runner = build_dir / "src" / "tests" / "test-runner"
    if not os.access(runner, os.X_OK):
        raise SystemExit(f"librdkafka test-runner not built at {runner}: "
                         f"run .ci/librdkafka.sh build")
    return runner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["gate", "candidates", "run"])
    p.add_argument("numbers", nargs="*", help="test numbers for mode `run`")
    p.add_argument("--broker", default=os.environ.get("KAFKA_BOOTSTRAP"),
                   help="HOST:PORT of a running broker [$KAFKA_BOOTSTRAP]")
    p.add_argument("--start", choices=["s2kafka", "tansu"],
                   default=os.environ.get("LIBRDKAFKA_START", "s2kafka"),
                   help="broker to start when no --broker is given [$LIBRDKAFKA_START]")
    p.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR,
                   help="where .ci/librdkafka.sh built librdkafka [$LIBRDKAFKA_BUILD_DIR]")
    p.add_argument("--timeout", type=float,
                   default=float(os.environ.get("LIBRDKAFKA_TEST_TIMEOUT", "300")),
                   help="seconds per test number [$LIBRDKAFKA_TEST_TIMEOUT, 300]")
    p.add_argument("--s2kafka-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for a started `s2kafka serve` (repeatable; the "
                   "suite's cluster settings, --set kafka.auto_create_partitions=4, come "
                   "first)")
    p.add_argument("--restart-each", action="store_true",
                   help="a fresh started broker for every number")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra test.conf line (repeatable)")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="keep per-test logs here (default: a temp dir, kept on failure)")
    p.add_argument("--retries", type=int, default=None,
                   help="rerun a failing number up to N times; a later pass counts (flagged "
                   "flaky) [gate: 1, else 0]")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each number N times; it passes only if every run passes "
                   "(use with candidates --update-allowlist)")
    p.add_argument("--update-allowlist", action="store_true",
                   help="candidates mode: write the passing numbers to allowlist.txt")
    args = p.parse_intermixed_args(argv)
    if args.retries is None:
        args.retries = 1 if args.mode == "gate" else 0

    if args.mode == "gate":
        numbers = read_list(ALLOWLIST)
    elif args.mode == "candidates":
        numbers = read_list(CANDIDATES)
    else:
        numbers = args.numbers
        bad = [n for n in numbers if not _NUM.match(n)]
        if bad or not numbers:
            p.error(f"mode run needs 4-digit test numbers, got {numbers!r}")
    if not numbers:
        print(f"# {args.mode}: no test numbers listed")
        print("0 passed, 0 failed")
        return 0

    runner = find_runner(args.build_dir)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="librdkafka-tests-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    conf = log_dir / "test.conf"
    broker = BrokerHandle(args.broker, args.start, log_dir,
                          [*S2KAFKA_SUITE_ARGS, *args.s2kafka_arg])
    allow = set(read_list(ALLOWLIST))
    results: list[Result] = []
    print(f"# librdkafka tests ({args.mode}, {len(numbers)} numbers), logs in {log_dir}",
          flush=True)
    def attempt(num: str, tag: str) -> Result:
        try:
            bootstrap = broker.ensure()
        except (peers.PeerUnavailable, peers.PeerStartError) as e:
            print(f"# cannot start broker: {e}", file=sys.stderr)
            broker.restart()
            return Result(num, "FAIL", f"broker did not start: {_squash(str(e), 120)}")
        write_conf(conf, bootstrap, args.conf)
        res = run_one(num, runner, conf, log_dir, args.timeout, tag)
        if broker.died():
            res = Result(num, "FAIL", f"broker exited ({broker.proc.proc.returncode}); "
                         + (res.reason or res.status), res.seconds)
            (log_dir / f"{num}{tag}.broker-tail.log").write_text(broker.proc.output_tail(200))
            broker.restart()
        elif args.restart_each and broker.proc is not None:
            broker.restart()
        return res

    try:
        for num in numbers:
            res = attempt(num, "")
            secs = res.seconds
            for i in range(2, args.repeat + 1):  # every run must pass
                if res.status != "PASS":
                    break
                again = attempt(num, f".run{i}")
                secs += again.seconds
                if again.status != "PASS":
                    res = Result(num, again.status,
                                 f"run {i}/{args.repeat}: {again.reason or again.status}")
            for i in range(1, args.retries + 1):  # a pass on retry counts, flagged
                if res.status != "FAIL":
                    break
                again = attempt(num, f".retry{i}")
                secs += again.seconds
                if again.status == "PASS":
                    res = Result(num, "PASS", f"flaky: passed on retry {i} after: "
                                 f"{res.reason}")
            res.seconds = secs
            print(res.line() + f"  # {res.seconds:.1f}s", flush=True)
            results.append(res)
    finally:
        broker.close()

    passed = [r.num for r in results if r.status == "PASS"]
    failed = [r.num for r in results if r.status == "FAIL"]
    skipped = [r.num for r in results if r.status == "SKIP"]
    rc = 0
    if args.mode == "gate":
        regressions = [n for n in failed if n in allow]
        if regressions:
            print(f"# REGRESSIONS (allowlisted, now failing): {' '.join(regressions)}")
            rc = 1
        if skipped:
            print(f"# allowlisted but skipped here (check the build's packages): "
                  f"{' '.join(skipped)}")
    elif args.mode == "candidates":
        print(f"# passing: {' '.join(passed) or '-'}")
        new = [n for n in passed if n not in allow]
        gone = [n for n in allow if n in failed]
        print(f"# passing but not in allowlist.txt: {' '.join(new) or '-'}")
        if gone:
            print(f"# allowlisted but failing: {' '.join(gone)}")
        if args.update_allowlist:
            header = [ln for ln in ALLOWLIST.read_text().splitlines() if ln.startswith("#")]
            ALLOWLIST.write_text("\n".join(header + sorted(set(passed))) + "\n")
            print(f"# wrote {len(passed)} numbers to {ALLOWLIST}")
    else:
        rc = 1 if failed else 0
    if failed or args.log_dir:
        print(f"# logs kept in {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    summary = f"{len(passed)} passed, {len(failed)} failed"
    if skipped:
        summary += f", {len(skipped)} skipped"
    print(summary, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
