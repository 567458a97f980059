"""Real clients accept the responses this codec encodes (ApiVersions, Metadata, Produce,
InitProducerId, FindCoordinator, ...): each client runs against the golden-capture fake
broker and must finish producing a record. Skipped when a client library is not installed."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from tests.protocol.tools.capture_golden import FakeBroker

PRODUCERS = {
    "kafka": """
        from kafka import KafkaProducer
        p = KafkaProducer(bootstrap_servers=BOOT)
        meta = p.send("golden", b"value", key=b"key").get(timeout=10)
        assert meta.offset == 0, meta
        p.close()
    """,
    "confluent_kafka": """
        from confluent_kafka import Producer
        done = []
        p = Producer({"bootstrap.servers": BOOT})
        p.produce("golden", b"value", on_delivery=lambda err, msg: done.append(err))
        p.flush(10)
        assert done == [None], done
    """,
}


async def _produce_against_fake_broker(tmp: Path, module: str) -> tuple[int, bytes]:
    broker = FakeBroker(tmp)
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    broker.port = server.sockets[0].getsockname()[1]
    script = f"BOOT = '127.0.0.1:{broker.port}'\n" + textwrap.dedent(PRODUCERS[module])
    async with server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, b"timeout"
    return proc.returncode or 0, err


@pytest.mark.parametrize("module", sorted(PRODUCERS))
def test_client_produces_through_our_responses(module: str, tmp_path: Path) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed")
    code, err = asyncio.run(_produce_against_fake_broker(tmp_path, module))
    assert code == 0, err.decode(errors="replace")[-2000:]
