"""Fast checks of the librdkafka gate's lists and output parsing (no build, no broker)."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"librdkafka_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


runner = _load("runner")
lister = _load("list_broker_tests")


def test_candidates_are_the_102_broker_numbers():
    cands = runner.read_list(HERE / "candidates.txt")
    assert len(cands) == 102
    assert cands == sorted(set(cands))


def test_allowlist_is_a_sorted_subset_of_candidates():
    allow = runner.read_list(HERE / "allowlist.txt")
    assert allow == sorted(set(allow))
    assert set(allow) <= set(runner.read_list(HERE / "candidates.txt"))


def test_findings_explain_every_excluded_candidate():
    cands = set(runner.read_list(HERE / "candidates.txt"))
    allow = set(runner.read_list(HERE / "allowlist.txt"))
    text = (HERE / "FINDINGS.md").read_text()
    explained = re.findall(r"^- (\d{4}): \S", text, re.MULTILINE)
    assert len(explained) == len(set(explained)), "a number is explained twice"
    assert set(explained) == cands - allow


_FAILED_OUTPUT = """\
\x1b[0m\x1b[36m[0011_produce_batch          /  3.052s] TEST FAILURE
\x1b[0m\x1b[31m### Test "0011_produce_batch (test_message_single_partition_record_fail:629)" \
failed at 0011-produce_batch.c:718:test_message_single_partition_record_fail() at Thu: ###
Test assertion failed: "invalid_record_fail_cnt == 10": 
\x1b[0m\x1b[31m### Test "<MAIN>" failed at test.c:1950:test_wait_exit() at Thu: ###
3 thread(s) still active in librdkafka
"""

_SKIPPED_OUTPUT = """\
TEST 20261126085618 (bare, scenario default) SUMMARY
|\x1b[36m 0053_stats_timing    |    SKIPPED |   0.000s \x1b[0m|\x1b[36m Filtered due to negative \
test flags\x1b[0m
|\x1b[36m 0053_stats           |    SKIPPED |   0.000s \x1b[0m|\x1b[36m RapidJSON >=1.1.0 not \
available\x1b[0m
"""


def test_failure_reason_names_the_subtest_and_assertion():
    reason = runner.failure_reason(_FAILED_OUTPUT, "0011")
    assert reason.startswith("0011_produce_batch [test_message_single_partition_record_fail")
    assert "0011-produce_batch.c:718" in reason
    assert "invalid_record_fail_cnt == 10" in reason
    assert "(" not in reason and ")" not in reason  # the FAIL line wraps it in parentheses


def test_skip_reason_prefers_the_broker_tests_own_reason():
    assert runner.skip_reason(_SKIPPED_OUTPUT, "0053") == "RapidJSON >=1.1.0 not available"


def test_result_lines():
    assert runner.Result("0001", "PASS").line() == "PASS 0001"
    assert runner.Result("0002", "FAIL", "why").line() == "FAIL 0002 (why)"


def test_broker_test_selection():
    src = """
struct test tests[] = {
    {.name = "<MAIN>", .flags = TEST_F_LOCAL},
    _TEST(0001_multiobj, 0),
    _TEST(0004_conf, TEST_F_LOCAL),
    _TEST(0028_long, TEST_F_KNOWN_ISSUE, TEST_BRKVER(0, 9, 0, 0), .extra = "x"),
    _TEST(0045_a, 0, TEST_BRKVER(0, 9, 0, 0)),
    _TEST(0045_b_mock, TEST_F_LOCAL),
    _TEST(0049_sockem, TEST_F_SOCKEM, TEST_BRKVER(0, 9, 0, 0)),
    _TEST(0107_recreate, 0, TEST_BRKVER_TOPIC_ADMINAPI, .scenario = "noautocreate"),
    _TEST(0170_share, 0, TEST_BRKVER(4, 2, 0, 0)),
    _TEST(8000_idle, TEST_F_MANUAL),
    {NULL}};
"""
    nums = [n for n, _ in lister.broker_tests(src)]
    assert nums == ["0001", "0028", "0045", "0049", "0107"]
    runnable = [n for n, _ in lister.broker_tests(src, runnable=True)]
    assert runnable == ["0001", "0045"]
