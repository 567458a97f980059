"""The broker: shared state of every Kafka connection (store, topics, producers, services)."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from broker.acls import (
    CLUSTER,
    CLUSTER_NAME,
    SUPPORTED,
    Authorizer,
    connection_host,
    connection_principal,
)
from broker.cluster import Cluster
from broker.groups.coordinator import GroupConfig, GroupCoordinator
from broker.interbroker import InterBroker
from broker.producers import ProducerRegistry
from broker.protocol.registry import APIS
from broker.quotas import QuotaManager
from broker.reassign import Reassigner
from broker.sasl import ALL_MECHANISMS, SaslUsers
from broker.services import load_services
from broker.topics import TopicRegistry, stream_name
from broker.transactions import TransactionCoordinator
from s2core.errors import StreamNotFound
from s2core.metadata.base import VersionMismatch
from s2core.store import StreamStore


@dataclass
class BrokerConfig:
    """Settings of the Kafka layer (from the [kafka] and [server] config sections)."""

    basin: str = "default-basin"
    node_id: int = 0
    advertised_host: str = "127.0.0.1"
    advertised_port: int = 9092
    auto_create_topics: bool = True
    auto_create_partitions: int = 1
    max_frame_bytes: int = 100 * 1024 * 1024
    max_inflight_requests: int = 64
    idle_timeout_s: float = 600.0
    max_batch_decompressed_bytes: int = 64 * 1024 * 1024
    group_initial_rebalance_delay_ms: int = 0
    # SASL users (name -> password; empty: clients are not authenticated) and mechanisms
    sasl_users: dict[str, str] = field(default_factory=dict)
    sasl_mechanisms: tuple[str, ...] = ALL_MECHANISMS
    oauthbearer: object | None = None  # an oauth.OAuthBearer: SASL/OAUTHBEARER is offered
    # ACLs (broker/acls.py)
    authorizer: bool = False
    super_users: tuple[str, ...] = ()
    allow_everyone_if_no_acl_found: bool = False
    # client quotas (broker/quotas.py): Kafka's quota.window.size.seconds and .num
    quota_window_s: float = 1.0
    quota_window_num: int = 11
    # several brokers (broker/cluster.py)
    cluster: bool = False
    rack: str | None = None
    cluster_heartbeat_s: float = 1.0
    cluster_session_timeout_s: float = 6.0
    cluster_balance_coordinators: bool = True


class Broker:
    """Everything a Kafka request handler may need."""

    def __init__(self, store: StreamStore, config: BrokerConfig) -> None:
        self.store = store
        self.config = config
        self.basin = config.basin
        self.topics = TopicRegistry(store, config.basin)
        self.producers = ProducerRegistry(self)
        self.sasl = SaslUsers(config.sasl_users, config.sasl_mechanisms, config.oauthbearer)
        self.acls = Authorizer(store.metadata, config.authorizer, config.super_users,
                               config.allow_everyone_if_no_acl_found)
        self.quotas = QuotaManager(store.metadata, config.quota_window_s,
                                   config.quota_window_num)
        self.services = load_services()
        # several brokers (broker/cluster.py): off unless serve() configures it
        self.cluster = Cluster(self, config.cluster, heartbeat_s=config.cluster_heartbeat_s,
                               session_timeout_s=config.cluster_session_timeout_s,
                               rack=config.rack)
        self.cluster.balance = config.cluster_balance_coordinators
        self.topics.place = self.cluster.place
        self.interbroker = InterBroker(self)  # (started by serve() in a cluster)
        self.reassigner = Reassigner(self)  # partition moves (broker/reassign.py)
        self.cluster_id = ""
        self.extensions: dict[str, object] = {}
        # consumer groups (broker/groups): the coordinator, started and stopped here
        self.extensions["groups"] = GroupCoordinator(self, GroupConfig(
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms))
        # transactions (broker/transactions.py)
        self.extensions["txn"] = TransactionCoordinator(self)
        self.topics.on_gone = self._topic_gone

    async def start(self) -> None:
        await self.store.ensure_basin(self.basin)
        await self.cluster.register()
        await self.topics.load()
        await self.sasl.load(self.store.metadata)
        await self.acls.load()
        await self.quotas.load()
        self.cluster_id = await self._cluster_id()
        await self.extensions["groups"].start()
        await self.extensions["txn"].start()
        if self.cluster.enabled:
            await self.reassigner.resume()

    async def stop(self) -> None:
        """Stop background work (after the listener stopped, before the store closes)."""
        await self.cluster.stop()
        await self.extensions["groups"].stop()

    def _topic_gone(self, name: str) -> None:
        """Another broker deleted the topic: its partitions' producer and transaction state
        cached here goes too (a topic made again with the name starts afresh)."""
        self.producers.forget_topic(name)
        self.extensions["txn"].forget_topic(name)

    async def channels_changed(self, adopted: str | None = None,
                               released: str | None = None) -> None:
        """This broker took over a channel, or let one go (broker/cluster.py): the
        partitions and groups on it are served here, or no longer."""
        self.producers.forget_all()  # (rebuilt from the streams when next needed)
        groups, txn = self.extensions["groups"], self.extensions["txn"]
        if released is not None:
            groups.release_channel(released)
            txn.release_channel(released)
        if adopted is not None:
            await groups.adopt_channel(adopted)
            await txn.adopt_channel(adopted)
            await self.reassigner.resume()

    def allowed(self, conn, operation: int, resource_type: int = CLUSTER,
                name: str = CLUSTER_NAME) -> bool:
        """Whether the connection's principal may run `operation` on the resource (always,
        without an authorizer: broker/acls.py)."""
        acls = self.acls
        if not acls.enabled or getattr(conn, "internal", False):  # (another broker)
            return True
        if conn is None:
            return acls.authorize("User:ANONYMOUS", "", operation, resource_type, name)
        principal = getattr(conn, "acl_principal", None)
        if principal is None:
            principal = conn.acl_principal = connection_principal(conn)
        return acls.authorize(principal, connection_host(conn), operation, resource_type,
                              name)

    def authorized_ops(self, conn, resource_type: int, name: str = CLUSTER_NAME) -> int:
        """The bit field of the operations the connection may run on the resource (the
        `authorized_operations` of Metadata, DescribeCluster and the group descriptions)."""
        return sum(1 << op for op in SUPPORTED[resource_type]
                   if self.allowed(conn, op, resource_type, name))

    def allowed_any(self, conn, operation: int, resource_type: int) -> bool:
        """Whether the connection may run `operation` on some resource of the type."""
        if not self.acls.enabled:
            return True
        principal = connection_principal(conn) if conn is not None else "User:ANONYMOUS"
        host = connection_host(conn) if conn is not None else ""
        return self.acls.authorize_any(principal, host, operation, resource_type)

    async def _cluster_id(self) -> str:
        key = "kafka/cluster"
        row = await self.store.metadata.get(key)
        if row is None:
            cid = base64.urlsafe_b64encode(self.store.rng.getrandbits(128).to_bytes(16, "big"))
            value = json.dumps({"cluster_id": cid.decode().rstrip("=")}).encode()
            try:
                await self.store.metadata.create(key, value)
            except VersionMismatch:
                pass
            row = await self.store.metadata.get(key)
        return json.loads(row.value)["cluster_id"]

    def api_versions(self) -> list[tuple[int, int, int]]:
        """(api_key, min, max) for every API with a registered service: never more."""
        out = []
        for key, svc in sorted(self.services.items()):
            info = APIS[key]
            lo = max(svc.VERSIONS[0], info.decodable_min_version)
            # ADVERTISED_MAX: a service may vouch for a version the spec copy marks unstable
            hi = min(svc.VERSIONS[1], getattr(svc, "ADVERTISED_MAX", info.max_stable_version))
            out.append((key, lo, hi))
        return out

    def stream(self, topic: str, partition: int) -> str:
        return stream_name(topic, partition)

    async def partition_bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, high watermark) of a partition."""
        name = stream_name(topic, partition)
        try:
            tail = await self.store.check_tail(self.basin, name)
        except StreamNotFound:
            t = self.topics.get(topic)
            if t is None:
                raise
            await self.topics.ensure_partition(t, partition)
            tail = await self.store.check_tail(self.basin, name)
        first = await self.store.first_seq(self.basin, name)
        return first, tail.seq_num
