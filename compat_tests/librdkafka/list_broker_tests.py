#!/usr/bin/env python3
"""List librdkafka's *broker* test numbers from its test registry (tests/test.c).

librdkafka registers every test in the `tests[]` table of tests/test.c as
`_TEST(NNNN_name, FLAGS, [TEST_BRKVER(a,b,c,d)], [.scenario = "..."])`. A test is a
*broker test* (needs a running cluster) when:

  * FLAGS has no TEST_F_LOCAL (local tests use no broker or librdkafka's mock cluster;
    they are what `-l` runs and `-L` skips),
  * FLAGS has no TEST_F_MANUAL (run only when named by hand, e.g. 8000_idle),
  * its minimum broker version (TEST_BRKVER) is <= 3.9.0, the version we claim
    (TEST_KAFKA_VERSION=3.9.0; this drops the share-consumer tests, which need 4.2).

A number is a candidate when at least one of its tests is a broker test (one number can
hold several tests: 0045 has broker and mock variants). That gives 102 numbers for
librdkafka 2.15.1 (the copy in @confluentinc/kafka-javascript 1.10.1).

Of those, the runner flags we use (`-Q -E -L -K -p1`, scenario "default") skip some
entirely; `--runnable` leaves these out (92 numbers):

  * TEST_F_SOCKEM tests (-E: need socket emulation): 0049 0068 0075 0076 0088 0094,
  * TEST_F_KNOWN_ISSUE tests (-K): 0028 0047,
  * tests only for the "noautocreate" scenario: 0107 0111.

Usage:

    python3 list_broker_tests.py [--runnable] [--names] PATH/TO/librdkafka/tests/test.c
"""
from __future__ import annotations

import re
import sys

KNOWN_ISSUE_LINUX = {"TEST_F_KNOWN_ISSUE"}  # _WIN32/_OSX expand to 0 on Linux
MAX_VERSION = (3, 9, 0, 0)


def _entries(src: str) -> list[str]:
    start = src.index("struct test tests[] = {")
    end = src.index("{NULL}};", start)
    body = src[start:end]
    out, i = [], 0
    while True:
        j = body.find("_TEST(", i)
        if j < 0:
            return out
        depth, k = 0, j + len("_TEST")
        while True:
            if body[k] == "(":
                depth += 1
            elif body[k] == ")":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        out.append(body[j + len("_TEST("):k])
        i = k


def broker_tests(src: str, runnable: bool = False) -> list[tuple[str, str]]:
    """[(number, test name)] of the broker tests (see the module docstring); with
    `runnable`, only those that `-Q -E -L -K` in scenario "default" would execute."""
    selected = []
    for entry in _entries(src):
        flat = " ".join(entry.split())
        name, _, rest = flat.partition(",")
        flags = set(re.findall(r"TEST_F_\w+", rest.split(",")[0]))
        if flags & {"TEST_F_LOCAL", "TEST_F_MANUAL"}:
            continue
        minver = (0, 0, 0, 0)
        m = re.search(r"TEST_BRKVER\((\d+),\s*(\d+),\s*(\d+),\s*(\d+)\)", flat)
        if m:
            minver = tuple(int(x) for x in m.groups())
        elif "TEST_BRKVER_TOPIC_ADMINAPI" in flat:
            minver = (0, 10, 2, 0)
        if minver > MAX_VERSION:
            continue
        if runnable:
            if flags & ({"TEST_F_SOCKEM"} | KNOWN_ISSUE_LINUX):
                continue
            m = re.search(r'\.scenario\s*=\s*"([^"]*)"', flat)
            if m and "default" not in m.group(1).split(","):
                continue
        name = name.strip()
        selected.append((name.split("_", 1)[0], name))
    return selected


def main(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("test_c")
    p.add_argument("--runnable", action="store_true",
                   help="only numbers that -Q -E -L -K (scenario default) would run")
    p.add_argument("--names", action="store_true", help="print the test names too")
    args = p.parse_args(argv[1:])
    with open(args.test_c, encoding="utf-8") as f:
        tests = broker_tests(f.read(), runnable=args.runnable)
    seen: dict[str, list[str]] = {}
    for num, name in tests:
        seen.setdefault(num, []).append(name)
    for num in sorted(seen):
        print(f"{num}  # {' '.join(seen[num])}" if args.names else num)
    print(f"# {len(seen)} numbers, {len(tests)} tests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
