"""`s2kafka serve`: the stream store, the Kafka listener and the S2 HTTP API in one process."""
from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import threading
from typing import Any

from broker import retention as kafka_retention
from broker.cleaner import LogCleaner
from broker.cluster import claim_node_id
from broker.kafka import Broker, BrokerConfig
from broker.oauth import OAuthBearer
from broker.s2view import KafkaS2View
from broker.server import KafkaServer
from s2core.config import ConfigError, parse_hostport, tls_server_context
from s2core.http import create_app, serve_http
from s2core.http.relay import Relay
from s2core.http.server import bind_socket
from s2core.metadata import open_metadata_store
from s2core.server import (
    channel_config,
    close_store,
    maintenance,
    open_replica,
    open_store,
    server_owner,
    tune_runtime,
)
from s2core.store import ChannelSpec

log = logging.getLogger(__name__)


def broker_config(cfg: dict[str, Any]) -> BrokerConfig:
    host, port = parse_hostport(cfg["server"]["kafka_listen"], "server.kafka_listen")
    adv = cfg["server"]["kafka_advertised"]
    adv_host, adv_port = parse_hostport(adv, "server.kafka_advertised") if adv else (host, port)
    if adv_host in ("0.0.0.0", "::", ""):
        adv_host = "127.0.0.1"
    k = cfg["kafka"]
    return BrokerConfig(basin=cfg["server"]["default_basin"], advertised_host=adv_host,
                        advertised_port=adv_port, auto_create_topics=k["auto_create_topics"],
                        auto_create_partitions=k["auto_create_partitions"],
                        max_frame_bytes=k["max_frame_bytes"],
                        group_initial_rebalance_delay_ms=k["group_initial_rebalance_delay_ms"],
                        sasl_users=dict(str(u).partition(":")[::2]
                                        for u in cfg["server"]["kafka_sasl_users"]),
                        sasl_mechanisms=tuple(cfg["server"]["kafka_sasl_mechanisms"]),
                        oauthbearer=oauthbearer(cfg["server"]),
                        authorizer=cfg["server"]["kafka_authorizer"],
                        super_users=tuple(cfg["server"]["kafka_super_users"]),
                        allow_everyone_if_no_acl_found=cfg["server"][
                            "kafka_allow_everyone_if_no_acl_found"],
                        quota_window_s=k["quota_window_size_s"],
                        quota_window_num=k["quota_window_num"],
                        node_id=cfg["server"]["node_id"], cluster=cfg["server"]["cluster"],
                        rack=cfg["server"]["rack"] or None,
                        cluster_heartbeat_s=cfg["server"]["cluster_heartbeat_interval_s"],
                        cluster_session_timeout_s=cfg["server"][
                            "cluster_session_timeout_s"],
                        cluster_balance_coordinators=cfg["server"][
                            "cluster_balance_coordinators"])


def oauthbearer(srv: dict) -> OAuthBearer | None:
    """The OAUTHBEARER token validator the config asks for (None: not offered)."""
    if not (srv["kafka_oauthbearer_jwks_url"] or srv["kafka_oauthbearer_unsecured"]):
        return None
    return OAuthBearer(srv["kafka_oauthbearer_jwks_url"], srv["kafka_oauthbearer_unsecured"],
                       srv["kafka_oauthbearer_expected_audience"],
                       srv["kafka_oauthbearer_expected_issuer"],
                       srv["kafka_oauthbearer_sub_claim"],
                       srv["kafka_oauthbearer_clock_skew_s"])


async def serve(cfg: dict[str, Any], stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop`); everything acked is durable on return."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    # else: embedded in a thread (signals reach only the main thread); `stop` ends it
    if cfg["server"]["cluster"]:  # before its channel is opened (which fences its holder)
        md = open_metadata_store(cfg["metadata"]["url"])
        try:
            await claim_node_id(md, cfg["server"]["node_id"], server_owner(cfg),
                                cfg["server"]["cluster_heartbeat_interval_s"],
                                cfg["server"]["cluster_session_timeout_s"],
                                [u[len("log://"):] for u in cfg["wal"]["replicas"]
                                 if u.startswith("log://")])
        finally:
            await md.close()
    store = await open_store(cfg)
    bcfg = broker_config(cfg)
    broker = Broker(store, bcfg)
    cluster = broker.cluster
    cluster.wal, cluster.write_quorum = list(cfg["wal"]["replicas"]), cfg["wal"]["write_quorum"]
    async def open_channel(node) -> ChannelSpec:
        """The spec of another broker's channel, its replicas open (none left open if
        one cannot be: a local directory still held by that broker's process)."""
        replicas = []
        try:
            for url in node.wal:
                replicas.append(open_replica(url, cfg["wal"]["log_file_bytes"]))
        except BaseException:
            for r in replicas:
                await r.close()
            raise
        return ChannelSpec(node.channel, replicas, node.write_quorum, channel_config(cfg))

    cluster.open_channel = open_channel
    await broker.start()
    if bcfg.oauthbearer is not None:
        await bcfg.oauthbearer.load()
    kafka = KafkaServer(broker)
    k_host, k_port = parse_hostport(cfg["server"]["kafka_listen"], "server.kafka_listen")
    srv = cfg["server"]
    k_tls = tls_server_context(srv["kafka_tls_cert_file"], srv["kafka_tls_key_file"],
                               srv["kafka_tls_client_ca_file"] or None, "server.kafka") \
        if srv["kafka_tls_cert_file"] else None
    k_addr = await kafka.start(k_host, k_port, ssl=k_tls)
    if bcfg.advertised_port == 0:  # an ephemeral listener advertises what it got
        bcfg.advertised_port = k_addr[1]
    if bcfg.cluster:  # the brokers' own listener (broker/interbroker.py)
        i_host, i_port = parse_hostport(srv["cluster_listen"], "server.cluster_listen") \
            if srv["cluster_listen"] else (k_host, 0)
        await broker.interbroker.start(i_host, i_port, bcfg.advertised_host)
    h_host, h_port = parse_hostport(cfg["server"]["http_listen"], "server.http_listen")
    sock = bind_socket(h_host, h_port)
    h_addr = sock.getsockname()[:2]
    relay = None
    if bcfg.cluster and (not srv["http_tls_cert_file"] or srv["cluster_tls_ca_file"]):
        # S2 requests for another broker's streams are passed on to it (s2core/http/relay.py)
        cluster.http_address = [bcfg.advertised_host if h_addr[0] in ("0.0.0.0", "::", "")
                                else h_addr[0], h_addr[1]]
        try:
            relay = Relay(cluster.http_of, srv["cluster_tls_ca_file"]
                          if srv["http_tls_cert_file"] else None)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"server.cluster_tls_ca_file: {e}") from None
    await cluster.beat()  # (the others see these addresses from now on)
    cluster.start()
    app = create_app(store, auth_tokens=cfg["server"]["http_auth_tokens"] or None,
                     kafka_view=KafkaS2View(broker), relay=relay)
    http = loop.create_task(serve_http(app, h_host, h_port, stop, sock=sock,
                                       certfile=srv["http_tls_cert_file"] or None,
                                       keyfile=srv["http_tls_key_file"] or None))
    sweeper = loop.create_task(maintenance(store, stop,
                                           cfg["segments"]["orphan_sweep_interval_s"]))
    retention = loop.create_task(kafka_retention.run(
        broker, stop, cfg["kafka"]["retention_check_interval_s"]))
    expiry = loop.create_task(broker.producers.run_expiry(
        stop, cfg["kafka"]["producer_id_expiration_ms"]))
    txn_timeouts = broker.extensions["txn"].run_expiry(stop)
    jwks = loop.create_task(bcfg.oauthbearer.run_refresh(stop)) \
        if bcfg.oauthbearer is not None else None
    cleaner = loop.create_task(LogCleaner(
        broker, cfg["kafka"]["log_cleaner_dedupe_buffer_bytes"]).run(
        stop, cfg["kafka"]["log_cleaner_interval_s"])) \
        if cfg["kafka"]["log_cleaner_enable"] else None
    tune_runtime()
    print(f"s2kafka ready kafka={bcfg.advertised_host}:{bcfg.advertised_port} "
          f"http={h_addr[0]}:{h_addr[1]} data_dir={cfg['server']['data_dir']}"
          f"{' kafka_tls=on' if k_tls else ''}"
          f"{' http_tls=on' if srv['http_tls_cert_file'] else ''}", flush=True)
    try:
        await stop.wait()
    finally:
        stop.set()
        await kafka.stop()
        await broker.interbroker.stop()
        await broker.stop()  # consumer groups
        await asyncio.gather(http, return_exceptions=True)
        sweeper.cancel()
        retention.cancel()
        expiry.cancel()
        txn_timeouts.cancel()
        if jwks is not None:
            jwks.cancel()
        if cleaner is not None:
            cleaner.cancel()
        if relay is not None:
            await relay.close()
        await close_store(store)
        log.info("s2kafka stopped cleanly")
