"""DescribeLogDirs: one log dir (where this broker's segments live) holding every partition.

A partition's size is an estimate of the bytes it holds from its log start offset: the
segment sections it still references plus its in-memory tail (records the offloader has not
yet written are counted once, sections straddling the log start are counted whole).
"""
from __future__ import annotations

import os
import shutil

from broker.acls import DESCRIBE
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_log_dirs_response import (
    DescribeLogDirsPartition,
    DescribeLogDirsResponse,
    DescribeLogDirsResult,
    DescribeLogDirsTopic,
)
from s2core.errors import S2Error

API_KEY = 35
VERSIONS = (1, 5)


async def handle(broker, conn, header, request):
    if not broker.allowed(conn, DESCRIBE):
        return DescribeLogDirsResponse(throttle_time_ms=0,
                                       error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                                       results=[])
    if request.topics is None:
        wanted = [(t, range(t.partitions)) for _, t in sorted(broker.topics.topics.items())]
    else:
        wanted = []
        for rt in request.topics:
            t = broker.topics.get(rt.topic)
            if t is not None:
                wanted.append((t, [p for p in rt.partitions if 0 <= p < t.partitions]))
    topics = []
    for t, parts in wanted:
        out = [DescribeLogDirsPartition(partition_index=p,
                                        partition_size=await _size(broker, t.name, p),
                                        offset_lag=0, is_future_key=False)
               for p in parts]
        if out:
            topics.append(DescribeLogDirsTopic(name=t.name, partitions=out))
    log_dir, total, usable = _log_dir(broker.store.segments)
    result = DescribeLogDirsResult(error_code=0, log_dir=log_dir, topics=topics,
                                   total_bytes=total, usable_bytes=usable, is_cordoned=False)
    return DescribeLogDirsResponse(throttle_time_ms=0, error_code=0, results=[result])


def _log_dir(segments) -> tuple[str, int, int]:
    """(name, volume size, free bytes): a local segment directory is a real volume."""
    root = getattr(segments, "root", None)
    if root is None:
        return segments.name, -1, -1
    try:
        usage = shutil.disk_usage(root)
    except OSError:
        return root, -1, -1
    return os.fspath(root), usage.total, usage.free


async def _size(broker, topic: str, partition: int) -> int:
    """Bytes a partition holds from its log start offset (an estimate; 0 if it is gone).

    s2core has no public per-stream size, so this reads the stream's state and segment
    catalog the way the store itself does."""
    store = broker.store
    name = broker.stream(topic, partition)
    try:
        first = await store.first_seq(broker.basin, name)
        h = await store._handle(broker.basin, name)
        _, st = await store._state(h)
        starts, rows = await store.catalog.rows(h.uid)
    except S2Error:
        return 0
    mem_first = st.mem_first
    size = sum(row["n"] for start, row in zip(starts, rows)
               if row["e"] > first and start < mem_first)
    size += sum(len(r.body) for r in st.records_from(0, len(st.mem_recs))
                if r.end_seq > first and not r.is_command())
    return size
