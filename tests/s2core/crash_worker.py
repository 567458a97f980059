"""A store process for the crash tests: appends forever, printing each ack after it lands.

    python tests/s2core/crash_worker.py DATA_DIR append SEED    # append until killed
    python tests/s2core/crash_worker.py DATA_DIR dump           # print every record
"""
import asyncio
import json
import random
import sys

from s2core.config import load_config
from s2core.errors import AlreadyExists
from s2core.records import AppendRecord
from s2core.server import open_store

BASIN = "default-basin"
STREAMS = ["s0", "s1", "s2"]


async def append_forever(store, seed: int) -> None:
    rng = random.Random(seed)
    for name in STREAMS:
        try:
            await store.create_stream(BASIN, name, {"retention_policy": {"infinite": {}}})
        except AlreadyExists:
            pass
    n = 0

    async def writer(name: str) -> None:
        nonlocal n
        while True:
            count = rng.randint(1, 20)
            bodies = []
            for _ in range(count):
                n += 1
                bodies.append(f"{seed}-{n}".encode() + b"." * rng.randint(0, 3000))
            ack = await store.append(BASIN, name, [AppendRecord(b) for b in bodies])
            print(json.dumps({"s": name, "start": ack.start.seq_num,
                              "ids": [b.split(b".")[0].decode() for b in bodies]}), flush=True)

    await asyncio.gather(*(writer(s) for s in STREAMS), *(writer(s) for s in STREAMS))


async def dump(store) -> None:
    for name in STREAMS:
        try:
            seq = 0
            while True:
                batch = await store.read(BASIN, name, seq_num=seq, count=1000, clamp=True)
                if not batch.records:
                    break
                for r in batch.records:
                    print(json.dumps({"s": name, "seq": r.seq_num,
                                      "id": r.body.split(b".")[0].decode()}))
                seq = batch.records[-1].end_seq
        except Exception as e:  # noqa: BLE001 - report and go on
            print(json.dumps({"s": name, "error": repr(e)}))


async def main() -> None:
    data_dir, mode = sys.argv[1], sys.argv[2]
    wal = f"{data_dir}/wal"
    cfg = load_config(overrides={"server.data_dir": data_dir,
                                 # three replicas on small, recycled log files
                                 "wal.replicas": [f"log://{wal}/r{i}" for i in range(3)],
                                 "wal.write_quorum": 2,
                                 "wal.log_file_bytes": 256 * 1024,
                                 "tail.offload_target_bytes": 200_000,
                                 "tail.offload_interval_s": 0.2})
    store = await open_store(cfg)
    print("READY", flush=True)
    if mode == "append":
        await append_forever(store, int(sys.argv[3]))
    else:
        await dump(store)
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
