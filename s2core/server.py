"""Opening the stream store described by a config, and its periodic maintenance."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import sys
from typing import Any

from s2core import background
from s2core.channel import ChannelConfig
from s2core.metadata import open_metadata_store
from s2core.objstore import open_object_store
from s2core.clock import Slices
from s2core.store import ChannelSpec, Limits, StreamStore
from s2core.sweep import OrphanSweeper

log = logging.getLogger(__name__)


def channel_config(cfg: dict[str, Any]) -> ChannelConfig:
    wal, tail = cfg["wal"], cfg["tail"]
    return ChannelConfig(
        chunk_target_bytes=wal["chunk_target_bytes"],
        linger_s=wal["linger_ms"] / 1000.0,
        max_inflight_chunks=wal["max_inflight_chunks"],
        memory_bound_bytes=tail["memory_bound_bytes"],
        keep_in_memory_fraction=tail["keep_in_memory_fraction"],
        offload_target_bytes=tail["offload_target_bytes"],
        offload_interval_s=tail["offload_interval_s"],
        offload_min_stream_bytes=tail["offload_min_stream_bytes"],
        own_segment_bytes=tail["own_segment_bytes"],
        section_max_bytes=tail["section_max_bytes"],
        append_wait_timeout_s=tail["append_wait_timeout_s"],
    )


def open_replica(url: str, log_file_bytes: int | None = None):
    """A WAL replica: `log:///dir` is the local-disk log; anything else an object store."""
    if url.startswith("log://"):
        from s2core.wal.locallog import LocalLogReplica
        path = url[len("log://"):]
        if not path.startswith("/"):
            raise ValueError(f"log replica URL needs an absolute path: {url!r}")
        # exclusive: no other process may write the directory while this one has it open
        if log_file_bytes is None:
            return LocalLogReplica(path, exclusive=True)
        return LocalLogReplica(path, file_bytes=log_file_bytes, exclusive=True)
    return open_object_store(url)


def tune_runtime() -> None:
    """Interpreter settings for a latency-sensitive server; call once startup is done.

    - Threads that block in system calls (the SQLite metadata writer, segment writes,
      WAL file preparation) need the GIL after each call; with the default 5 ms switch
      interval a busy loop kept them waiting that long each time. The switch interval is
      0.1 ms. (It was chosen for the WAL's writer thread, whose syncs now run in a helper
      process: decision 0010.)
    - Objects alive after startup (modules, the codec's tables, configs) are frozen out of
      the garbage collector, and full collections are allowed only every 1000 middle-
      generation collections instead of every 10: a full collection scans every record
      of the in-memory tail (20-100 ms with 100,000s of small records), young ones stay
      small and frequent (a large young generation cost 70 ms pauses in the benchmarks).
    """
    sys.setswitchinterval(0.0001)
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 1000)


def server_owner(cfg: dict[str, Any]) -> str:
    """Who this process is, in the leases it takes: `server.owner`, else host:pid."""
    return cfg["server"]["owner"] or f"{socket.gethostname()}:{os.getpid()}"


async def open_store(cfg: dict[str, Any]) -> StreamStore:
    """Open the stream store described by `cfg` (see config/s2kafka.toml)."""
    os.makedirs(cfg["server"]["data_dir"], exist_ok=True)
    background.set_priority(cfg["server"]["background_cpu_priority"])
    owner = server_owner(cfg)
    metadata = open_metadata_store(cfg["metadata"]["url"])
    segments = open_object_store(cfg["segments"]["url"])
    replicas = [open_replica(url, cfg["wal"]["log_file_bytes"]) for url in cfg["wal"]["replicas"]]
    # alone: "ch0"; in a cluster, each broker's own (broker/cluster.py)
    channel = f"ch{cfg['server']['node_id']}" if cfg["server"]["cluster"] else "ch0"
    spec = ChannelSpec(channel, replicas, cfg["wal"]["write_quorum"], channel_config(cfg))
    limits = Limits(max_append_records=cfg["limits"]["max_append_records"],
                    max_append_bytes=cfg["limits"]["max_append_bytes"])
    store = await StreamStore.open(metadata, segments, [spec], limits=limits, owner=owner)
    await store.ensure_basin(cfg["server"]["default_basin"])
    return store


async def close_store(store: StreamStore) -> None:
    """Stop a store `open_store` opened, then the backends it opened for it: in-flight
    segment writes finish, WAL files are closed and their sync helpers exit."""
    await store.close()
    for ch in store.channels.values():
        for replica in ch.log.replicas:
            await replica.close()
    await store.segments.close()
    await store.metadata.close()


async def maintenance(store: StreamStore, stop: asyncio.Event,
                      orphan_sweep_interval_s: float = 600.0) -> None:
    """Periodic retention and trim sweeps until `stop` is set; the next one starts 60 s
    after the previous one ended, so sweeps never overlap however long one takes. Every
    `orphan_sweep_interval_s` (0: never) one also looks for segment objects nothing
    references (s2core/sweep.py), which it deletes when the next one finds them unused
    still."""
    orphans = OrphanSweeper(store)
    next_orphan_sweep = store.clock.monotonic() + orphan_sweep_interval_s
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), min(60.0, orphan_sweep_interval_s or 60.0))
        except TimeoutError:
            started = store.clock.monotonic()
            try:
                removed = await store.trim_and_retain()
            except Exception:
                log.exception("retention sweep failed")
            else:
                log.debug("retention sweep removed %d sections in %.1f s", removed,
                          store.clock.monotonic() - started)
            if orphan_sweep_interval_s and store.clock.monotonic() >= next_orphan_sweep:
                try:
                    await orphans.sweep(Slices(store.clock, quiet=store.quiet).tick)
                except Exception:
                    log.exception("orphan segment sweep failed")
                next_orphan_sweep = store.clock.monotonic() + orphan_sweep_interval_s
