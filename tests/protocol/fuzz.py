"""Mutation fuzzer for the request/response decoders and the record batch helpers.

    python -m tests.protocol.fuzz --count 1000000 [--seed N]

Starts from a corpus of valid frames (every API, every version, populated with non-default
values, plus the golden client captures), mutates them (bit flips, truncation, splices,
smashed lengths/varints, random bytes) and asserts that decoding either succeeds or raises a
``DecodeError`` subclass, quickly. Anything else is printed with a reproducer and counted as a
failure (exit status 1).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from broker.protocol import APIS, DecodeError, decode_request, decode_response
from broker.protocol.frames import encode_request, encode_response
from broker.protocol.messages import _index
from broker.protocol.records import (
    Compression,
    Record,
    batch_crc,
    build_batch,
    iter_records,
    split_batches,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
SLOW_SECONDS = 0.05
INTERESTING_I32 = (-1, -2, 0, 1, 0x7FFFFFFF, -0x80000000, 0x10000, 255)


def sample_value(kind: str, rng: random.Random, sub: type | None, version: int) -> object:
    if sub is not None:
        return sample_message(sub, version, rng)
    if kind in ("int8", "int16", "int32", "int64", "uint16"):
        return rng.choice([0, 1, 2, 7, 100]) if kind != "uint16" else 9092
    if kind == "bool":
        return True
    if kind == "float64":
        return 1.5
    if kind == "uuid":
        return rng.randbytes(16)
    if kind == "string":
        return rng.choice(["a", "topic-1", "ü", ""])
    if kind == "bytes":
        return rng.randbytes(rng.randint(0, 6))
    if kind == "records":
        return bytes(SAMPLE_BATCH)
    raise AssertionError(kind)


def sample_message(cls: type, version: int, rng: random.Random) -> object:
    """An instance of ``cls`` with every field of ``version`` set to a non-default value."""
    kwargs = {}
    for name, kind, versions, _nullable, _tag, _tagged, sub in cls.FIELDS:
        if not versions[0] <= version <= versions[1]:
            continue
        if kind.startswith("[]"):
            kwargs[name] = [sample_value(kind[2:], rng, sub, version)
                            for _ in range(rng.randint(1, 2))]
        else:
            kwargs[name] = sample_value(kind, rng, sub, version)
    return cls(**kwargs)


SAMPLE_BATCH = build_batch([Record(0, 1000, b"k", b"value", (("h", b"x"),)),
                            Record(1, 1001, None, b"v2")])


def build_corpus(seed: int = 0) -> list[tuple[str, int, int, bytes]]:
    """(kind, api_key, version, frame without size prefix) for every API version."""
    rng = random.Random(seed)
    corpus = []
    for info in APIS.values():
        for version in info.request.ENCODERS:
            header = _index.request_header.RequestHeader(info.api_key, version, 7, "fuzz")
            body = sample_message(info.request_class, version, rng)
            corpus.append(("request", info.api_key, version,
                           b"".join(encode_request(header, body))[4:]))
        for version in info.response.ENCODERS:
            body = sample_message(info.response_class, version, rng)
            corpus.append(("response", info.api_key, version,
                           b"".join(encode_response(7, body, info.api_key, version))[4:]))
    if GOLDEN.is_dir():
        for path in sorted(GOLDEN.glob("*.hex")):
            frame = bytes.fromhex(path.read_text())[4:]
            api_key, version = struct.unpack_from(">hh", frame)
            corpus.append(("request", api_key, version, frame))
    return corpus


def batch_corpus() -> list[bytes]:
    recs = [Record(i, 1000 + i, b"key%d" % i, b"v" * (i * 7), (("h", b"x"),)) for i in range(4)]
    return [bytes(build_batch(recs, compression=c)) for c in Compression]


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(8)
        n = len(buf)
        if op == 0 and n:  # bit flip
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:  # truncate
            del buf[rng.randint(0, n):]
        elif op == 3 and n >= 4:  # smash an int32 / int16 length
            pos = rng.randrange(n - 3)
            if rng.random() < 0.5:
                struct.pack_into(">i", buf, pos, rng.choice(INTERESTING_I32))
            else:
                struct.pack_into(">h", buf, pos, rng.choice((-1, -2, 0x7FFF, 1)))
        elif op == 4:  # an invalid / huge varint
            pos = rng.randint(0, n)
            buf[pos:pos] = bytes([0xFF] * rng.randint(1, 7) + [rng.randrange(128)])
        elif op == 5:  # insert random bytes
            pos = rng.randint(0, n)
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 6 and n:  # delete a range
            pos = rng.randrange(n)
            del buf[pos:pos + rng.randint(1, 8)]
        else:  # splice with another corpus entry
            other = rng.choice(corpus)
            cut = rng.randint(0, n)
            buf = buf[:cut] + other[rng.randint(0, len(other)):]
    return bytes(buf)


def check_frame(kind: str, api_key: int, version: int, data: bytes) -> None:
    view = memoryview(bytearray(data))
    if kind == "request":
        decode_request(view)
    else:
        decode_response(view, api_key, version)


def fix_batch(data: bytes) -> bytes:
    """Make a mutated batch pass the length and CRC checks, to reach record decoding."""
    if len(data) < 61:
        return data
    buf = bytearray(data)
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">I", buf, 17, batch_crc(buf, 0, len(buf)))
    return bytes(buf)


def check_batch(data: bytes) -> None:
    for pos, _header in split_batches(data, allow_partial_tail=True):
        for _ in iter_records(data, pos, max_decompressed=1 << 20):
            pass


def run_one(fn: Callable[[], None]) -> tuple[bool, str]:
    """Run one decode; (ok, message). Only DecodeError subclasses are acceptable failures."""
    try:
        fn()
    except DecodeError:
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any other exception is the bug we hunt
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def fuzz(count: int, seed: int, report: Callable[[str], None] = print) -> int:
    """Run ``count`` mutated inputs; return the number of failures."""
    rng = random.Random(seed)
    corpus = build_corpus(seed)
    frames = [entry[3] for entry in corpus]
    batches = batch_corpus()
    failures = slow = 0
    started = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        if i % 10 == 9:
            data = mutate(rng.choice(batches), rng, batches)
            if rng.random() < 0.7:
                data = fix_batch(data)
            ok, msg = run_one(lambda data=data: check_batch(data))
            what = f"batch {data.hex()}"
        else:
            kind, api_key, version, frame = rng.choice(corpus)
            data = mutate(frame, rng, frames)
            ok, msg = run_one(lambda k=kind, a=api_key, v=version, d=data: check_frame(k, a, v, d))
            what = f"{kind} api={api_key} v={version} {data.hex()}"
        took = time.perf_counter() - t0
        if took > SLOW_SECONDS:
            slow += 1
            if slow <= 5:
                report(f"SLOW #{i}: {took * 1000:.0f} ms\n  input: {what}")
        if not ok:
            failures += 1
            if failures <= 20:
                report(f"FAIL #{i}: {msg}\n  input: {what}")
        if report is print and i and i % 100_000 == 0:
            rate = i / (time.perf_counter() - started)
            report(f"{i} inputs, {failures} failures, {slow} slow, {rate:.0f}/s")
    elapsed = time.perf_counter() - started
    report(f"done: {count} inputs in {elapsed:.1f}s, {failures} failures, "
           f"{slow} slower than {SLOW_SECONDS * 1000:.0f} ms, corpus {len(corpus)} frames")
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.protocol.fuzz")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    return 1 if fuzz(args.count, args.seed) else 0


if __name__ == "__main__":
    sys.exit(main())
