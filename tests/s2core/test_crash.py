"""Crash tests with real processes: SIGKILL a store process at random moments while it
appends to the local-directory WAL (3 replicas, quorum 2) and SQLite metadata; after every
restart each acknowledged record must be present exactly once, in order."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("crash_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def start(data_dir, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(WORKER), str(data_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def dump(data_dir):
    p = start(data_dir, "dump")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()[1:]]
    errors = [r for r in rows if "error" in r]
    assert not errors, errors
    return rows


KILLS = int(os.environ.get("CRASH_KILLS", "20"))


# ~2.2 s per kill here (a worker start, up to 0.8 s of appends, a dump every 5 kills):
# the suite's 300 s timeout would stop `CRASH_KILLS=100` on a slower machine.
@pytest.mark.timeout(max(300, 10 * KILLS))
def test_sigkill_loses_nothing_acked(tmp_path):
    rng = random.Random(int(os.environ.get("CRASH_SEED", "7")))
    kills = KILLS
    acked = {}  # (stream, seq) -> id
    for round_no in range(kills):
        p = start(tmp_path, "append", str(round_no))
        line = p.stdout.readline()
        assert line.strip() == "READY", (line, p.stderr.read() if p.poll() is not None else "")
        time.sleep(rng.uniform(0.05, 0.8))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        for line in out.splitlines():
            try:
                ack = json.loads(line)
            except json.JSONDecodeError:
                continue  # the kill can cut the last line short: that ack never reached us
            for i, rec_id in enumerate(ack["ids"]):
                acked[(ack["s"], ack["start"] + i)] = rec_id
        if round_no % 5 == 4 or round_no == kills - 1:
            check(dump(tmp_path), acked)
    assert len(acked) > 100, "the workers made progress between kills"


def check(rows, acked):
    by_stream = {}
    for r in rows:
        by_stream.setdefault(r["s"], []).append(r)
    for name, recs in by_stream.items():
        seqs = [r["seq"] for r in recs]
        assert seqs == list(range(len(seqs))), f"{name}: seq_nums not contiguous from 0"
        ids = [r["id"] for r in recs]
        assert len(ids) == len(set(ids)), f"{name}: duplicate records"
    present = {(r["s"], r["seq"]): r["id"] for r in rows}
    for key, rec_id in acked.items():
        assert present.get(key) == rec_id, f"acked record {key}={rec_id} missing or changed"
