"""Black-box fixtures: a real `s2kafka serve` process on ephemeral ports.

`broker` is shared by the whole session (tests use unique topic names from `topic_name`);
`fresh_broker` starts a private one for tests that restart or kill it.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import uuid

import pytest

from brokerproc import start_broker


@pytest.fixture(scope="session")
def broker():
    d = tempfile.mkdtemp(prefix="s2kafka-compat-")
    b = start_broker(d)
    yield b
    rc = b.stop()
    shutil.rmtree(d, ignore_errors=True)
    assert rc == 0, "broker exited uncleanly on SIGTERM"


@pytest.fixture
def fresh_broker(tmp_path):
    b = start_broker(str(tmp_path / "data"))
    holder = [b]
    yield holder
    for x in holder:
        x.stop()


@pytest.fixture
def topic_name(request):
    base = re.sub(r"[^a-zA-Z0-9_-]", "-", request.node.name)[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"
