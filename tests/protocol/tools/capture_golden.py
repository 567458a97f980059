"""Capture real clients' request frames as golden fixtures (a throwaway fake broker).

    python -m tests.protocol.tools.capture_golden [--out tests/protocol/golden]

Listens on 127.0.0.1, answers with this codec just enough for clients to get from ApiVersions
and Metadata to Produce, Fetch and JoinGroup, and saves the first frame of each
(client, API, version) as ``<client>_<Api>_v<version>.hex`` (size prefix included). Clients:
confluent-kafka, kafka-python, aiokafka (each run in a subprocess) and the kcat binary.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

from broker.protocol import APIS, advertised_versions, decode_request, encode_response
from broker.protocol.messages import api_versions_response as av
from broker.protocol.messages import fetch_response as fr
from broker.protocol.messages import find_coordinator_response as fc
from broker.protocol.messages import init_producer_id_response as ip
from broker.protocol.messages import list_offsets_response as lo
from broker.protocol.messages import metadata_response as md
from broker.protocol.messages import produce_response as pr

WANTED = {"ApiVersions", "Metadata", "Produce", "Fetch", "JoinGroup"}
TOPIC = "golden"
TOPIC_ID = bytes(range(1, 17))


class FakeBroker:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.client = "unknown"
        self.port = 0
        self.saved: list[str] = []

    def save(self, api: str, version: int, frame: bytes) -> None:
        if api not in WANTED:
            return
        path = self.out / f"{self.client}_{api}_v{version}.hex"
        if not path.exists():
            path.write_text(frame.hex() + "\n")
            self.saved.append(path.name)

    def answer(self, api_key: int, version: int, body: object) -> object:
        host, port = "127.0.0.1", self.port
        if api_key == 18:
            return av.ApiVersionsResponse(api_keys=[av.ApiVersion(k, a, b)
                                                    for k, a, b in advertised_versions()])
        if api_key == 3:
            part = md.MetadataResponsePartition(partition_index=0, leader_id=0, leader_epoch=0,
                                                replica_nodes=[0], isr_nodes=[0])
            topic = md.MetadataResponseTopic(name=TOPIC, topic_id=TOPIC_ID, partitions=[part])
            return md.MetadataResponse(brokers=[md.MetadataResponseBroker(0, host, port)],
                                       cluster_id="golden-cluster", controller_id=0,
                                       topics=[topic])
        if api_key == 0:
            return pr.ProduceResponse(responses=[
                pr.TopicProduceResponse(name=t.name, topic_id=t.topic_id, partition_responses=[
                    pr.PartitionProduceResponse(index=p.index, base_offset=0)
                    for p in t.partition_data])
                for t in body.topic_data])  # type: ignore[attr-defined]
        if api_key == 1:
            return fr.FetchResponse(responses=[
                fr.FetchableTopicResponse(topic=t.topic, topic_id=t.topic_id, partitions=[
                    fr.PartitionData(partition_index=p.partition, high_watermark=0,
                                     last_stable_offset=0, log_start_offset=0, records=b"")
                    for p in t.partitions])
                for t in body.topics])  # type: ignore[attr-defined]
        if api_key == 10:
            keys = body.coordinator_keys or [body.key]  # type: ignore[attr-defined]
            return fc.FindCoordinatorResponse(node_id=0, host=host, port=port, coordinators=[
                fc.Coordinator(key=k, node_id=0, host=host, port=port) for k in keys])
        if api_key == 2:
            return lo.ListOffsetsResponse(topics=[
                lo.ListOffsetsTopicResponse(name=t.name, partitions=[
                    lo.ListOffsetsPartitionResponse(partition_index=p.partition_index, offset=0)
                    for p in t.partitions])
                for t in body.topics])  # type: ignore[attr-defined]
        if api_key == 22:
            return ip.InitProducerIdResponse(producer_id=1000, producer_epoch=0)
        return APIS[api_key].response_class()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                prefix = await reader.readexactly(4)
                frame = await reader.readexactly(struct.unpack(">i", prefix)[0])
                header, body = decode_request(memoryview(frame))
                api = APIS[header.request_api_key].name
                self.save(api, header.request_api_version, prefix + frame)
                if api == "Produce" and body.acks == 0:  # type: ignore[attr-defined]
                    continue
                resp = self.answer(header.request_api_key, header.request_api_version, body)
                writer.writelines(encode_response(header.correlation_id, resp,
                                                  header.request_api_key,
                                                  header.request_api_version))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # noqa: BLE001 - report and keep capturing other clients
            print(f"[{self.client}] {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            writer.close()


CLIENTS = {
    "confluent": """
        from confluent_kafka import Consumer, Producer, TopicPartition
        p = Producer({"bootstrap.servers": BOOT, "linger.ms": 0})
        p.produce("golden", b"value", key=b"key"); p.flush(5)
        c = Consumer({"bootstrap.servers": BOOT, "group.id": "golden-group"})
        c.assign([TopicPartition("golden", 0, 0)]); c.poll(2); c.close()
        c = Consumer({"bootstrap.servers": BOOT, "group.id": "golden-group"})
        c.subscribe(["golden"]); c.poll(4)
    """,
    "kafkapython": """
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition
        p = KafkaProducer(bootstrap_servers=BOOT)
        p.send("golden", b"value", key=b"key").get(timeout=10); p.close()
        c = KafkaConsumer(bootstrap_servers=BOOT)
        tp = TopicPartition("golden", 0); c.assign([tp]); c.seek(tp, 0); c.poll(2000)
        c = KafkaConsumer("golden", bootstrap_servers=BOOT, group_id="golden-group")
        c.poll(4000)
    """,
    "aiokafka": """
        import asyncio
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        async def main():
            p = AIOKafkaProducer(bootstrap_servers=BOOT); await p.start()
            await p.send_and_wait("golden", b"value", key=b"key"); await p.stop()
            c = AIOKafkaConsumer(bootstrap_servers=BOOT); await c.start()
            tp = TopicPartition("golden", 0); c.assign([tp]); c.seek(tp, 0)
            await c.getmany(timeout_ms=2000); await c.stop()
            c = AIOKafkaConsumer("golden", bootstrap_servers=BOOT, group_id="golden-group")
            await c.start()
            try:
                await asyncio.wait_for(c.getmany(timeout_ms=4000), 6)
            finally:
                await asyncio.wait_for(c.stop(), 3)
        asyncio.run(main())
    """,
}


def kcat_commands(boot: str) -> list[tuple[list[str], bytes | None]]:
    return [
        (["kcat", "-P", "-b", boot, "-t", TOPIC, "-K:"], b"key:value\n"),
        (["kcat", "-C", "-b", boot, "-t", TOPIC, "-p", "0", "-o", "0", "-c", "1"], None),
        (["kcat", "-b", boot, "-G", "golden-group", TOPIC], None),
    ]


async def run_client(broker: FakeBroker, name: str) -> None:
    broker.client = name
    boot = f"127.0.0.1:{broker.port}"
    if name == "kcat":
        cmds = kcat_commands(boot)
    else:
        script = f"BOOT = {boot!r}\n" + textwrap.dedent(CLIENTS[name])
        cmds = [([sys.executable, "-c", script], None)]
    for argv, stdin in cmds:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await asyncio.wait_for(proc.communicate(stdin), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def main_async(out: Path, clients: list[str]) -> None:
    broker = FakeBroker(out)
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    broker.port = server.sockets[0].getsockname()[1]
    async with server:
        for name in clients:
            await run_client(broker, name)
    print("\n".join(sorted(broker.saved)))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.protocol.tools.capture_golden")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "golden")
    p.add_argument("clients", nargs="*", default=["confluent", "kafkapython", "aiokafka", "kcat"])
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args.out, args.clients))


if __name__ == "__main__":
    main()
