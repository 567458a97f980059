"""Codec benchmarks, side by side with kio (an independent generated codec, native parts).

    python bench/bench_codec.py [--repeat 15]

Each figure is the median over ``--repeat`` rounds of the per-call time (microseconds).
Objects are built before timing; decode starts from a memoryview of a bytearray receive
buffer (as the server holds it); encode ends with what can be handed to the transport
(our list of buffers; kio's BytesIO contents).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.protocol import decode_request, encode_request, encode_response
from broker.protocol.messages import _index
from broker.protocol.messages import fetch_response as fr
from broker.protocol.messages import metadata_response as md
from broker.protocol.messages import produce_request as pq
from broker.protocol.records import Record, build_batch

TARGETS_US = {"decode Produce v9, 1 x 1 MiB batch": 5.0,
              "encode Fetch v12 response, 100 x 64 KiB": 150.0,
              "encode Metadata v12 response, 1000 topics": 2000.0}


def median_us(fn: Callable[[], object], repeat: int) -> float:
    number = 1
    while timeit.timeit(fn, number=number) < 0.02:
        number *= 2
    return statistics.median(t / number * 1e6 for t in timeit.repeat(fn, number=number,
                                                                      repeat=repeat))


def produce_frame(partitions: int, batch_size: int) -> bytearray:
    batch = build_batch([Record(0, 1_700_000_000_000, None, bytes(batch_size - 70))])
    body = pq.ProduceRequest(acks=-1, timeout_ms=30000, topic_data=[pq.TopicProduceData(
        name="bench-topic", partition_data=[pq.PartitionProduceData(i, memoryview(batch))
                                            for i in range(partitions)])])
    header = _index.request_header.RequestHeader(0, 9, 1, "bench-client")
    return bytearray(b"".join(encode_request(header, body))[4:])


def fetch_response() -> fr.FetchResponse:
    payload = bytes(build_batch([Record(0, 1_700_000_000_000, None, bytes(64 * 1024 - 70))]))
    return fr.FetchResponse(responses=[fr.FetchableTopicResponse(topic="bench-topic", partitions=[
        fr.PartitionData(partition_index=i, high_watermark=1000, last_stable_offset=1000,
                         log_start_offset=0, records=payload) for i in range(100)])])


def metadata_response() -> md.MetadataResponse:
    topics = [md.MetadataResponseTopic(name=f"topic-{i:05d}", topic_id=i.to_bytes(16, "big"),
                                       partitions=[md.MetadataResponsePartition(
                                           partition_index=0, leader_id=1, leader_epoch=3,
                                           replica_nodes=[1, 2, 3], isr_nodes=[1, 2, 3])])
              for i in range(1000)]
    brokers = [md.MetadataResponseBroker(i, f"broker-{i}", 9092) for i in range(3)]
    return md.MetadataResponse(brokers=brokers, cluster_id="bench", controller_id=1,
                               topics=topics)


def kio_codecs() -> dict[str, Callable[..., object]] | None:
    try:
        from kio.index import load_request_schema, load_response_schema
        from kio.schema.request_header.v2.header import RequestHeader
        from kio.serial import entity_reader, entity_writer
    except ImportError:
        return None
    return {
        "header": entity_reader(RequestHeader),
        "produce9": entity_reader(load_request_schema(0, 9)),
        "fetch12_r": entity_reader(load_response_schema(1, 12)),
        "fetch12_w": entity_writer(load_response_schema(1, 12)),
        "meta12_r": entity_reader(load_response_schema(3, 12)),
        "meta12_w": entity_writer(load_response_schema(3, 12)),
    }


def body_bytes(parts: list) -> bytes:
    return b"".join(parts)[9:]  # size prefix + correlation id + empty header tags


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()
    kio = kio_codecs()
    rows: list[tuple[str, float, float | None]] = []

    for label, frame in (("decode Produce v9, 1 x 1 MiB batch", produce_frame(1, 1 << 20)),
                         ("decode Produce v9, 100 x 1 KiB batches", produce_frame(100, 1024))):
        view = memoryview(frame)
        ours = median_us(lambda view=view: decode_request(view), args.repeat)
        theirs = None
        if kio:
            ro = memoryview(bytes(frame))  # kio refuses writable buffers

            def kio_decode(view: memoryview = ro) -> object:
                _header, n = kio["header"](view, 0)
                return kio["produce9"](view, n)
            theirs = median_us(kio_decode, args.repeat)
        rows.append((label, ours, theirs))

    for label, body, key, rd, wr in (
        ("encode Fetch v12 response, 100 x 64 KiB", fetch_response(), 1, "fetch12_r",
         "fetch12_w"),
        ("encode Metadata v12 response, 1000 topics", metadata_response(), 3, "meta12_r",
         "meta12_w"),
    ):
        ours = median_us(lambda body=body, key=key: encode_response(1, body, key, 12),
                         args.repeat)
        theirs = None
        if kio:
            kio_body, _ = kio[rd](body_bytes(encode_response(1, body, key, 12)), 0)

            def kio_encode(kio_body: object = kio_body, wr: str = wr) -> bytes:
                out = io.BytesIO()
                kio[wr](out, kio_body)
                return out.getvalue()
            theirs = median_us(kio_encode, args.repeat)
            assert kio_encode() == body_bytes(encode_response(1, body, key, 12))
        rows.append((label, ours, theirs))

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load}")
    print(f"{'benchmark (median us per call)':44} {'ours':>10} {'kio':>10} {'kio/ours':>9}"
          f"  target")
    for label, ours, theirs in rows:
        target = TARGETS_US.get(label)
        k = f"{theirs:10.1f}" if theirs is not None else f"{'n/a':>10}"
        ratio = f"{theirs / ours:8.1f}x" if theirs is not None else f"{'':>9}"
        t = f"<= {target:g} {'ok' if ours <= target else 'MISSED'}" if target else ""
        print(f"{label:44} {ours:10.1f} {k} {ratio}  {t}")


if __name__ == "__main__":
    main()
