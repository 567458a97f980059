"""Prometheus metrics of the HTTP API, in a registry owned by one app (not the global one)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Request counts and latencies by route, plus records and bytes appended and read."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("s2_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "s2_http_request_duration_seconds",
            "Time to answer a request (to the end of the response for sessions)",
            ["method", "route"], registry=self.registry,
            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60))
        self.appended_records = Counter("s2_appended_records", "Records appended",
                                        registry=self.registry)
        self.appended_bytes = Counter("s2_appended_bytes", "Metered bytes appended",
                                      registry=self.registry)
        self.read_records = Counter("s2_read_records", "Records sent to readers",
                                    registry=self.registry)
        self.read_bytes = Counter("s2_read_bytes", "Metered bytes sent to readers",
                                  registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def on_append(self, records: int, nbytes: int) -> None:
        self.appended_records.inc(records)
        self.appended_bytes.inc(nbytes)

    def on_read(self, records: int, nbytes: int) -> None:
        if records:
            self.read_records.inc(records)
            self.read_bytes.inc(nbytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
