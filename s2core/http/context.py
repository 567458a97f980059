"""What every handler of the API shares: the store, settings, metrics and small caches."""
from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from s2core.errors import InvalidArgument
from s2core.http.asgi import Request, Response
from s2core.http.errors import bad_request
from s2core.http.metrics import Metrics
from s2core.http.tokens import AccessTokens
from s2core.http.usage import Usage
from s2core.names import validate_basin_name, validate_stream_name
from s2core.store import StreamStore


class KafkaView(Protocol):
    """Shows Kafka topic partitions as S2 streams (provided by the broker).

    `is_kafka_stream` says whether a stream holds Kafka record batches; `read` and
    `read_session` take the arguments of `StreamStore.read` / `read_session` and return S2
    records, one per Kafka record (seq_num = Kafka offset).
    """

    def is_kafka_stream(self, basin: str, name: str) -> bool: ...

    async def read(self, basin: str, name: str, **read_args: Any) -> Any: ...

    def read_session(self, basin: str, name: str, **read_args: Any) -> Any: ...


@dataclass
class Settings:
    """Tunables of the HTTP API."""

    location: str = "local"  # the one location (region) this server offers
    max_body_bytes: int = 8 * 1024 * 1024  # JSON/protobuf request bodies; larger -> 413
    max_message_bytes: int = 4 * 1024 * 1024  # one S2S message after decompression
    heartbeat_s: float = 5.0  # read sessions: heartbeat (ping) interval while idle
    max_unary_wait_s: int = 60
    request_token_cache: int = 4096


class Api:
    """The handlers' shared state."""

    def __init__(self, store: StreamStore, settings: Settings,
                 kafka_view: KafkaView | None, tokens: AccessTokens | None = None) -> None:
        self.store = store
        self.settings = settings
        self.kafka_view = kafka_view
        self.tokens = tokens or AccessTokens(store.metadata)
        self.usage = Usage(metadata=store.metadata)  # S2's usage metrics (/v1/metrics)
        self.storage_cache: dict[str, tuple[int, int]] = {}  # basin -> (hour, bytes)

        self.metrics = Metrics()
        self.draining = asyncio.Event()  # set at shutdown: sessions end, clients reconnect
        self.relay = None  # (relay.Relay: the records of streams another server serves)
        self._created: OrderedDict[tuple[str, str], tuple[Any, Response]] = OrderedDict()

    def count_append(self, basin: str, name: str, ops: int, nbytes: int) -> None:
        """Usage of `ops` appends of `nbytes` to a stream, by its storage class."""
        cls = self.store.cached_storage_class(basin, name)
        self.usage.add(basin, f"append_ops_{cls}", ops)
        self.usage.add(basin, f"append_bytes_{cls}", nbytes)

    def basin_of(self, req: Request) -> str:
        """The basin of a /v1/streams request: the `s2-basin` header, else the first label
        of the Host (S2's `{basin}.b.<domain>` endpoints)."""
        name = req.headers.get("s2-basin")
        where = "s2-basin header"
        if name is None:
            host = req.headers.get("host", "")
            host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if host.startswith("[") or _is_ip(host) or "." not in host:
                raise bad_request("bad_header", "missing s2-basin header")
            name = host.split(".", 1)[0]
            where = "host name"
        try:
            return validate_basin_name(name)
        except InvalidArgument as exc:
            raise bad_request("bad_header", f"{where}: {exc}") from None

    @staticmethod
    def stream_name(segment: str) -> str:
        try:
            return validate_stream_name(segment)
        except InvalidArgument as exc:
            raise bad_request("bad_path", str(exc)) from None

    @staticmethod
    def basin_name(segment: str) -> str:
        try:
            return validate_basin_name(segment)
        except InvalidArgument as exc:
            raise bad_request("bad_path", str(exc)) from None

    # Idempotent creates: a retry carrying the same s2-request-token gets the first answer
    # (bounded, in memory: a retry after a restart sees 409 like any other duplicate).

    def replay(self, kind: str, token: str | None, request: Any) -> Response | None:
        if token is None:
            return None
        hit = self._created.get((kind, token))
        if hit is None or hit[0] != request:
            return None
        return hit[1]

    def remember(self, kind: str, token: str | None, request: Any, response: Response) -> None:
        if token is None:
            return
        self._created[(kind, token)] = (request, response)
        while len(self._created) > self.settings.request_token_cache:
            self._created.popitem(last=False)

    def reader(self, basin: str, name: str) -> Any:
        """What serves reads of this stream: the Kafka view for Kafka partitions, else the
        store (both have `read` and `read_session`)."""
        kv = self.kafka_view
        if kv is not None and kv.is_kafka_stream(basin, name):
            return kv
        return self.store

    def check_writable(self, basin: str, name: str) -> None:
        """Kafka partitions take writes from Kafka producers only."""
        kv = self.kafka_view
        if kv is not None and (kv.is_kafka_stream(basin, name)
                               or getattr(kv, "is_internal", lambda b, n: False)(basin, name)):
            from s2core.http.errors import HttpError
            raise HttpError(409, "kafka_partition",
                            f"stream {name!r} belongs to the Kafka layer (a topic partition or "
                            "its internal state): write to it through Kafka (reads work here)")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
