"""The error-code table against kio's independent one."""

from __future__ import annotations

import pytest

from broker.protocol.errors import ErrorCode, error_name


def test_table_covers_minus_one_to_latest() -> None:
    codes = sorted(int(c) for c in ErrorCode)
    assert codes == list(range(-1, codes[-1] + 1)) and codes[-1] >= 130
    assert ErrorCode.UNSUPPORTED_VERSION == 35 and ErrorCode.NOT_LEADER_OR_FOLLOWER.retriable
    assert not ErrorCode.UNKNOWN_MEMBER_ID.retriable
    assert error_name(3) == "UNKNOWN_TOPIC_OR_PARTITION" and error_name(999) == "UNKNOWN_ERROR_999"


def test_names_codes_and_retriable_flags_match_kio() -> None:
    kio_errors = pytest.importorskip("kio.schema.errors")
    theirs = {int(e.value): (e.name.upper(), bool(e.retriable)) for e in kio_errors.ErrorCode}
    ours = {int(c): (c.name, c.retriable) for c in ErrorCode}
    common = set(theirs) & set(ours)
    assert len(common) >= 130
    assert {k: ours[k] for k in common} == {k: theirs[k] for k in common}
