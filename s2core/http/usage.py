"""S2's usage metrics (/v1/metrics): what the API did, per basin, as time series.

The HTTP API counts, per basin, in minute and hour buckets: successful operations by name
(account and basin operations), appends and appended bytes by storage class, reads by kind
(unary, streaming) and bytes read. Minute buckets are kept for a day, hour buckets for 31
days (S2 answers ranges of up to 30 days). They are kept in metadata too, one row per
minute with any activity (`usage/<minute>`: every basin's counters of that minute, added
to at each save), saved every SAVE_S seconds and at shutdown and read back at startup,
so a restart loses at most the counts of the last SAVE_S seconds (a crash) or none (a
clean stop); rows older than 31 days are deleted. Storage is a gauge computed when asked (offloaded sections plus the tail not yet
offloaded), one point at the current hour (basins) or minute (streams).

What is served, as S2 serves it:
- /v1/metrics?set=active-basins: a label metric `active_basins`, the basins with any
  counted activity in the range; set=account-ops: an accumulation per account operation.
- /v1/metrics/{basin}?set=storage (gauge, hour only) | append-ops (`append_ops_standard`,
  `append_ops_express`) | read-ops (`read_ops_streaming`, `read_ops_unary`) |
  read-throughput (`read_bytes`) | append-throughput (`append_bytes_standard`,
  `append_bytes_express`) | basin-ops (an accumulation per basin operation).
- /v1/metrics/{basin}/{stream}?set=storage (gauge, minute only).
`start` and `end` (Unix seconds) are required, start <= end, end at most a minute ahead,
at most 30 days apart (422 `invalid` otherwise); `interval` is minute, hour (the default)
or day. A basin or stream that does not exist has no data (200), not a 404.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from s2core.http.errors import invalid
from s2core.metadata import list_all
from s2core.metadata.base import VersionMismatch

log = logging.getLogger(__name__)
PREFIX = "usage/"
SAVE_S = 10.0

MINUTE, HOUR, DAY = 60, 3600, 86400
_STEPS = {"minute": MINUTE, "hour": HOUR, "day": DAY}
_KEEP_MINUTES_S = DAY
_KEEP_HOURS_S = 31 * DAY
_MAX_RANGE_S = 30 * DAY

ACCOUNT_OPS = ("list-basins", "create-basin", "delete-basin", "reconfigure-basin",
               "get-basin-config", "issue-access-token", "revoke-access-token",
               "list-access-tokens")
BASIN_OPS = ("list-streams", "create-stream", "delete-stream", "get-stream-config",
             "reconfigure-stream")
ACCOUNT = ""  # the "basin" account operations are counted under


class Usage:
    """Minute and hour buckets of counters per basin (see the module doc)."""

    def __init__(self, clock=time, metadata=None) -> None:
        self.clock = clock
        self.metadata = metadata  # where the counts are kept (None: in memory only)
        self._minutes: dict[str, dict[int, dict[str, float]]] = {}
        self._hours: dict[str, dict[int, dict[str, float]]] = {}
        self._unsaved: dict[int, dict[str, dict[str, float]]] = {}  # minute -> basin -> ..
        self._pruned_at = 0
        self._saver: asyncio.Task | None = None

    def add(self, basin: str, name: str, value: float = 1.0) -> None:
        now = int(self.clock.time())
        minute = now - now % MINUTE
        self._count(basin, name, value, minute)
        if self.metadata is not None:
            b = self._unsaved.setdefault(minute, {}).setdefault(basin, {})
            b[name] = b.get(name, 0.0) + value
        if minute != self._pruned_at:
            self._pruned_at = minute
            self._prune(now)

    def _count(self, basin: str, name: str, value: float, minute: int) -> None:
        b = self._minutes.setdefault(basin, {}).setdefault(minute, {})
        b[name] = b.get(name, 0.0) + value
        hour = minute - minute % HOUR
        b = self._hours.setdefault(basin, {}).setdefault(hour, {})
        b[name] = b.get(name, 0.0) + value

    # -- kept in metadata ------------------------------------------------------------------

    async def load(self) -> None:
        """Read back the saved minutes of the last 31 days (before serving)."""
        if self.metadata is None:
            return
        now = int(self.clock.time())
        for key, v in await list_all(self.metadata, PREFIX,
                                     f"{PREFIX}{now - _KEEP_HOURS_S:012d}"):
            try:
                minute = int(key[len(PREFIX):])
                basins = json.loads(v.value)
            except ValueError:
                continue
            for basin, counters in basins.items():
                for name, value in counters.items():
                    self._count(basin, name, value, minute)
        self._prune(now)

    def start(self) -> None:
        """Save every SAVE_S seconds from now on (on the running loop)."""
        if self.metadata is not None and self._saver is None:
            self._saver = asyncio.get_running_loop().create_task(self._save_loop())

    async def stop(self) -> None:
        """Stop saving periodically, after one last save."""
        if self._saver is not None:
            self._saver.cancel()
            self._saver = None
        try:
            await self.save()
        except Exception:  # the counts of this process are lost, not more
            log.exception("saving the S2 usage counts failed")

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_S)
            try:
                await self.save()
            except Exception:  # kept, and tried again at the next save
                log.exception("saving the S2 usage counts failed")

    async def save(self) -> None:
        """Add the counts since the last save to their minutes' rows."""
        if self.metadata is None:
            return
        unsaved, self._unsaved = self._unsaved, {}
        try:
            for minute in sorted(unsaved):
                await self._merge(minute, unsaved[minute])
                del unsaved[minute]
        finally:
            for minute, basins in unsaved.items():  # (not saved: the next save retries)
                mine = self._unsaved.setdefault(minute, {})
                for basin, counters in basins.items():
                    b = mine.setdefault(basin, {})
                    for name, value in counters.items():
                        b[name] = b.get(name, 0.0) + value
        await self._drop_old()

    async def _merge(self, minute: int, basins: dict) -> None:
        key = f"{PREFIX}{minute:012d}"
        while True:
            row = await self.metadata.get(key)
            have = json.loads(row.value) if row is not None else {}
            for basin, counters in basins.items():
                b = have.setdefault(basin, {})
                for name, value in counters.items():
                    b[name] = b.get(name, 0.0) + value
            body = json.dumps(have, separators=(",", ":")).encode()
            try:
                if row is None:
                    await self.metadata.create(key, body)
                else:
                    await self.metadata.put(key, body, row.version)
                return
            except VersionMismatch:
                continue  # (another writer of the same minute came first: add to it)

    async def _drop_old(self) -> None:
        cutoff = f"{PREFIX}{int(self.clock.time()) - _KEEP_HOURS_S:012d}"
        rows = await self.metadata.list_prefix(PREFIX, limit=100)
        for key, v in rows:
            if key >= cutoff:
                break
            await self.metadata.delete(key, v.version)

    def op(self, op: str, basin: str | None) -> None:
        if op in ACCOUNT_OPS:
            self.add(ACCOUNT, op)
            if basin:  # (a basin's own operations also make it active)
                self.add(basin, "")
        elif op in BASIN_OPS and basin:
            self.add(basin, op)

    def _prune(self, now: int) -> None:
        for table, keep in ((self._minutes, _KEEP_MINUTES_S), (self._hours, _KEEP_HOURS_S)):
            for basin in list(table):
                buckets = table[basin]
                for ts in [ts for ts in buckets if ts < now - keep]:
                    del buckets[ts]
                if not buckets:
                    del table[basin]

    def series(self, basin: str, name: str, start: int, end: int,
               interval: str) -> list[list]:
        """[timestamp, value] of `name` per `interval` overlapping [start, end]."""
        step = _STEPS[interval]
        source = self._minutes if interval == "minute" else self._hours
        out: dict[int, float] = {}
        for ts, counters in source.get(basin, {}).items():
            v = counters.get(name)
            if v is None:
                continue
            at = ts - ts % step
            if at <= end and at + step > start:
                out[at] = out.get(at, 0.0) + v
        return [[ts, v] for ts, v in sorted(out.items())]

    def names(self, basin: str) -> set[str]:
        return {n for counters in self._hours.get(basin, {}).values() for n in counters}

    def active_basins(self, start: int, end: int) -> list[str]:
        out = []
        for basin, buckets in self._hours.items():
            if basin != ACCOUNT and any(ts <= end and ts + HOUR > start for ts in buckets):
                out.append(basin)
        return sorted(out)


def time_params(req, default_interval: str = "hour", now: float | None = None
                ) -> tuple[int, int, str]:
    """start, end and interval of a metrics request (422 as S2 answers)."""
    q = req.query
    unknown = set(q) - {"set", "start", "end", "interval"}
    if unknown:
        raise invalid(f"unknown query parameter(s): {sorted(unknown)}")
    if "start" not in q or "end" not in q:
        raise invalid(f"start and end params required for {q.get('set', 'the metric set')}")
    try:
        start, end = int(q["start"]), int(q["end"])
    except ValueError:
        raise invalid("start and end must be Unix timestamps in seconds") from None
    now = time.time() if now is None else now
    if start < 0 or end < 0 or start > end:
        raise invalid("start must be at most end")
    if end > now + 60:
        raise invalid("end must not be more than a minute in the future")
    if end - start > _MAX_RANGE_S:
        raise invalid("the time range must not exceed 30 days")
    interval = q.get("interval", default_interval)
    if interval not in _STEPS:
        raise invalid(f"interval must be one of {list(_STEPS)}")
    return start, end, interval


def accumulation(name: str, unit: str, interval: str, values: list) -> dict:
    return {"accumulation": {"name": name, "unit": unit, "interval": interval,
                             "values": values}}


def gauge(name: str, unit: str, values: list) -> dict:
    return {"gauge": {"name": name, "unit": unit, "values": values}}


def label(name: str, values: list[str]) -> dict:
    return {"label": {"name": name, "values": values}}
