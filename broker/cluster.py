"""Several brokers in one cluster (docs/decisions/0016-several-brokers.md).

With `server.cluster = true`, brokers that share one metadata store and one segment store
form a cluster. Each broker has a node id and its own WAL channel (`ch<node id>`); a
partition's leader is the broker that serves the channel of its stream's current
streamlet. Brokers register in metadata (`kafka/brokers/<node id>`: address, rack, the
WAL of their channel) and heartbeat there; a broker whose heartbeat is older than
`cluster_session_timeout_s` is dead. One live broker (chosen by the channel's hash, so
that several dead brokers' logs spread over the live ones) then adopts the dead broker's
channel: it takes the channel's lease (fencing the dead broker, should
it still be writing), recovers its log from the dead broker's WAL replicas (S3, or local
directories this host can reach) and serves its partitions and groups from then on. When
the dead broker comes back, it takes its channel back by opening it (the adopter, fenced,
lets go of it). Nothing moves: the streams stay on their channels, and only the lease of
a channel says who serves it.

New partitions and the group journal's streams are placed on the live brokers' channels
in turn. Caches of what other brokers change (topics, ACLs, SCRAM users, quotas) are read
again at every heartbeat. A transaction's coordinator writes its markers into partitions
other brokers lead with WriteTxnMarkers requests (broker/interbroker.py).

Without `server.cluster` (the default) the broker is alone: it leads every partition, as
before.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass

from s2core.errors import S2Error, Unavailable
from s2core.metadata import list_all
from s2core.metadata.base import VersionMismatch

log = logging.getLogger(__name__)

PREFIX = "kafka/brokers/"


def channel_name(node_id: int) -> str:
    return f"ch{node_id}"


@dataclass
class Node:
    """A broker as registered."""

    node_id: int
    host: str
    port: int
    rack: str | None
    owner: str
    channel: str
    wal: list
    write_quorum: int
    heartbeat_ms: int
    live: bool = False
    internal: list | None = None  # [host, port] of its internal listener (interbroker.py)
    http: list | None = None  # [host, port] of its S2 HTTP API (s2core/http/relay.py)

    @classmethod
    def from_json(cls, raw: bytes) -> Node:
        d = json.loads(raw)
        return cls(d["node_id"], d["host"], d["port"], d.get("rack"), d["owner"],
                   d["channel"], d["wal"], d["write_quorum"], d["heartbeat_ms"],
                   internal=d.get("internal"), http=d.get("http"))

    def to_json(self) -> bytes:
        return json.dumps({"node_id": self.node_id, "host": self.host, "port": self.port,
                           "rack": self.rack, "owner": self.owner, "channel": self.channel,
                           "wal": self.wal, "write_quorum": self.write_quorum,
                           "heartbeat_ms": self.heartbeat_ms,
                           "internal": self.internal, "http": self.http}).encode()


class ClusterError(Exception):
    """The broker cannot join the cluster (its node id is in use)."""


async def claim_node_id(metadata, node_id: int, owner: str, heartbeat_s: float,
                        session_timeout_s: float, wal_dirs: list[str] = ()) -> None:
    """Before a broker opens its channel: make sure no live broker has `node_id` (see
    `_wait_for_silence`), then say it is back (a fresh heartbeat in its row, so that a
    broker that adopted its channel lets it go) and wait until its local WAL directories
    are free (that broker closes them), beating meanwhile. ClusterError if another live
    broker has the id, or the directories stay in use."""
    await _wait_for_silence(metadata, node_id, owner, heartbeat_s, session_timeout_s)
    key = f"{PREFIX}{node_id}"
    deadline = time.monotonic() + 4 * session_timeout_s
    while True:
        row = await metadata.get(key)
        if row is not None:
            node = Node.from_json(row.value)
            node.owner, node.heartbeat_ms = owner, int(time.time() * 1000)
            try:
                await metadata.put(key, node.to_json(), row.version)
            except VersionMismatch:
                pass  # (read again next round)
        busy = [d for d in wal_dirs if not _dir_free(d)]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"the WAL directories {busy} stay in use by another process")
        await asyncio.sleep(heartbeat_s)


def _dir_free(root: str) -> bool:
    from s2core.wal.locallog import lock_dir

    if not os.path.isdir(root):
        return True
    try:
        os.close(lock_dir(root))
    except Unavailable:
        return False
    return True


async def _wait_for_silence(metadata, node_id: int, owner: str, heartbeat_s: float,
                            session_timeout_s: float) -> None:
    """A row for `node_id` whose heartbeat is recent may be this broker's previous run
    (killed a moment ago): wait until its heartbeat stops (at most the session timeout).
    ClusterError if it goes on beating: another live broker has the id (opening the
    channel would fence it)."""
    key = f"{PREFIX}{node_id}"
    row = await metadata.get(key)
    if row is None:
        return
    first = Node.from_json(row.value)
    if first.owner == owner:
        return
    deadline = time.monotonic() + session_timeout_s
    seen = first.heartbeat_ms
    while time.time() * 1000 - seen <= session_timeout_s * 1000:
        if time.monotonic() > deadline:
            raise ClusterError(f"node id {node_id} is in use by {first.owner} "
                               f"({first.host}:{first.port})")
        await asyncio.sleep(heartbeat_s)
        row = await metadata.get(key)
        if row is None:
            return
        now_seen = Node.from_json(row.value).heartbeat_ms
        if now_seen != seen:  # it beats: alive; give it the whole timeout to stop
            seen = now_seen
    log.info("node id %d: the previous broker (%s) stopped beating; taking its place",
             node_id, first.owner)


class Cluster:
    """This broker's view of the cluster, kept up by its heartbeat loop."""

    def __init__(self, broker, enabled: bool = False, *, heartbeat_s: float = 1.0,
                 session_timeout_s: float = 6.0, rack: str | None = None,
                 wal: list | None = None, write_quorum: int = 1,
                 open_channel=None) -> None:
        self.broker = broker
        self.enabled = enabled
        self.node_id = broker.config.node_id
        self.heartbeat_s = heartbeat_s
        self.session_timeout_ms = int(session_timeout_s * 1000)
        self.rack = rack
        self.wal = list(wal or [])
        self.write_quorum = write_quorum
        self.open_channel = open_channel  # async (Node) -> ChannelSpec of its channel
        self.nodes: dict[int, Node] = {}
        self.channel_node: dict[str, int] = {}  # channel -> node id of its lease holder
        self.lease_owner: dict[str, str] = {}   # every broker's channel -> its lease owner
        self._version = 0
        self._task: asyncio.Task | None = None
        self._changing = asyncio.Lock()
        self.balance = True  # move group journal partitions to spread coordinators
        self.http_address: list | None = None  # this broker's S2 HTTP API, as published
        self._live_set: frozenset[int] = frozenset()
        self._live_since = time.monotonic()
        self._beats = 0

    @property
    def home(self) -> str:
        return channel_name(self.node_id)

    @property
    def store(self):
        return self.broker.store

    # -- membership ----------------------------------------------------------------

    def _me(self) -> Node:
        cfg = self.broker.config
        address = getattr(getattr(self.broker, "interbroker", None), "address", None)
        return Node(self.node_id, cfg.advertised_host, cfg.advertised_port, self.rack,
                    self.store.owner, self.home, self.wal, self.write_quorum,
                    int(time.time() * 1000), True,
                    list(address) if address is not None else None, self.http_address)

    async def register(self) -> None:
        """Join (after `claim_node_id`): write our row, then look around."""
        if not self.enabled:
            return
        key = f"{PREFIX}{self.node_id}"
        row = await self.store.metadata.get(key)
        me = self._me()
        if row is None:
            self._version = await self.store.metadata.create(key, me.to_json())
        else:
            self._version = await self.store.metadata.put(key, me.to_json(), row.version)
        await self.refresh()

    async def beat(self) -> None:
        """Heartbeat now (the listener's address is known)."""
        if self.enabled:
            await self._heartbeat()

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop beating, and say so (a heartbeat of 0), so that another broker takes the
        channel over at its next beat rather than after the session timeout (it can once
        this process has closed the channel's WAL)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            me = self._me()
            me.heartbeat_ms = 0
            try:
                await self.store.metadata.put(f"{PREFIX}{self.node_id}", me.to_json(),
                                              self._version)
            except Exception:  # then the others wait out the session timeout
                log.warning("could not tell the cluster this broker is leaving",
                            exc_info=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._heartbeat()
                await self.refresh()
                await self._take_over()
                await self._reload_caches()
                await self.broker.extensions["groups"].follow_moves()
                self._beats += 1
                if self._beats % 10 == 0:  # (a move a failure left: reassign.py)
                    await self.broker.reassigner.resume()
                if self.balance and self.controller() == self.node_id:
                    await self.broker.reassigner.balance_coordinators()
            except asyncio.CancelledError:
                raise
            except Exception:  # metadata unreachable: the next beat retries
                log.exception("cluster heartbeat failed")

    async def _heartbeat(self) -> None:
        key = f"{PREFIX}{self.node_id}"
        try:
            self._version = await self.store.metadata.put(key, self._me().to_json(),
                                                          self._version)
        except VersionMismatch:
            row = await self.store.metadata.get(key)
            other = Node.from_json(row.value) if row is not None else None
            if other is not None and other.owner != self.store.owner:
                log.error("node id %d was registered by %s too: two brokers share a node "
                          "id", self.node_id, other.owner)
            self._version = await self.store.metadata.put(key, self._me().to_json(), 0)

    async def refresh(self) -> None:
        """Read the registry and the leases of the brokers' channels."""
        now = int(time.time() * 1000)
        nodes: dict[int, Node] = {}
        for _, v in await list_all(self.store.metadata, PREFIX):
            n = Node.from_json(v.value)
            n.live = now - n.heartbeat_ms <= self.session_timeout_ms
            nodes[n.node_id] = n
        nodes[self.node_id] = self._me()
        by_owner = {n.owner: n.node_id for n in nodes.values() if n.live}
        lease_owner: dict[str, str] = {}
        channel_node: dict[str, int] = {}
        for n in nodes.values():
            lease = await self.store.metadata.get(f"channel/{n.channel}")
            owner = json.loads(lease.value).get("owner", "") if lease is not None else ""
            lease_owner[n.channel] = owner
            if owner in by_owner:
                channel_node[n.channel] = by_owner[owner]
        for ch in self.store.channels:
            channel_node[ch] = self.node_id
        self.nodes, self.channel_node = nodes, channel_node
        self.lease_owner = lease_owner
        live = frozenset(n.node_id for n in nodes.values() if n.live)
        if live != self._live_set:
            self._live_set, self._live_since = live, time.monotonic()

    def settled(self) -> bool:
        """Every live broker serves its own channel, and the set of live brokers has not
        changed for a session timeout."""
        return time.monotonic() - self._live_since >= self.session_timeout_ms / 1000 and \
            all(self.channel_leader(n.channel) == n.node_id for n in self.live_nodes())

    async def _take_over(self) -> None:
        """Adopt the channels of dead brokers (each by the live broker its hash picks), let go of
        adopted channels whose lease went to someone else, take our own back."""
        async with self._changing:
            homes = {n.channel: n for n in self.nodes.values()}
            mine = {ch for ch in self.store.channels}
            for ch in sorted(mine):
                home = homes.get(ch)
                if ch != self.home and home is not None and home.live:
                    log.warning("node %d is back: letting its channel %s go",
                                home.node_id, ch)
                    await self._release(ch)
                    continue
                owner = self.lease_owner.get(ch, self.store.owner)  # (as `refresh` read it)
                if owner == self.store.owner:
                    continue
                log.warning("channel %s was taken over by %s: letting it go", ch, owner)
                await self._release(ch)
                if ch == self.home:  # ours: take it back
                    await self._adopt(self._me())
            live = sorted(n.node_id for n in self.nodes.values() if n.live)
            if not live:
                return
            for n in sorted(self.nodes.values(), key=lambda n: n.node_id):
                if n.live or n.channel in self.store.channels:
                    continue
                if live[zlib.crc32(n.channel.encode()) % len(live)] != self.node_id:
                    continue  # (dead brokers' logs are spread over the live ones)
                holder = self.channel_node.get(n.channel)
                if holder is not None and self.nodes.get(holder, n).live:
                    continue  # another live broker serves it
                log.warning("node %d is gone (last heartbeat %.1f s ago): adopting its "
                            "channel %s", n.node_id, (time.time() * 1000 - n.heartbeat_ms)
                            / 1000, n.channel)
                await self._adopt(n)

    async def _adopt(self, n: Node) -> None:
        try:
            spec = await self.open_channel(n)
        except Unavailable as e:  # (its process is still closing it: the next beat)
            log.info("channel %s cannot be adopted yet: %s", n.channel, e)
            return
        except Exception:  # its WAL unreachable from here: tried again later
            log.exception("adopting channel %s failed", n.channel)
            return
        try:
            await self.store.adopt_channel(spec)
        except Exception:  # tried again at the next beat, with new replicas
            log.exception("adopting channel %s failed", n.channel)
            for replica in spec.replicas:
                with contextlib.suppress(Exception):
                    await replica.close()
            return
        self.channel_node[n.channel] = self.node_id
        await self.broker.channels_changed(adopted=n.channel)

    async def _release(self, channel: str) -> None:
        await self.store.release_channel(channel)
        self.channel_node.pop(channel, None)
        await self.broker.channels_changed(released=channel)

    async def _reload_caches(self) -> None:
        b = self.broker
        await b.topics.load()
        await b.acls.load()
        await b.sasl.load(b.store.metadata)
        await b.quotas.load()

    # -- leadership ----------------------------------------------------------------

    def live_nodes(self) -> list[Node]:
        if not self.enabled:
            return [self._me()]
        return sorted((n for n in self.nodes.values() if n.live), key=lambda n: n.node_id)

    def controller(self) -> int:
        live = self.live_nodes()
        return live[0].node_id if live else self.node_id

    def channel_leader(self, channel: str) -> int | None:
        if not self.enabled or channel in self.store.channels:
            return self.node_id
        node = self.channel_node.get(channel)
        n = self.nodes.get(node) if node is not None else None
        return node if n is not None and n.live else None

    async def stream_leader(self, stream: str, basin: str | None = None) -> int | None:
        """The node that serves `stream` (in the broker's basin unless told) now; None:
        nobody."""
        if not self.enabled:
            return self.node_id
        h = await self.store._handle(basin or self.broker.basin, stream)
        return self.channel_leader(h.chain[-1]["channel"])

    async def http_of(self, basin: str, stream: str) -> tuple[str, int] | None:
        """The S2 HTTP API of the broker serving `stream`, if another one does."""
        try:
            leader = await self.stream_leader(stream, basin)
        except S2Error:
            return None  # (answered here: not found)
        node = self.nodes.get(leader) if leader != self.node_id else None
        if node is None or not node.http:
            return None
        return node.http[0], node.http[1]

    def place(self, key: str, index: int) -> str | None:
        """The channel a new stream goes to: the live brokers' channels in turn (None:
        the store's default, when alone)."""
        if not self.enabled:
            return None
        live = self.live_nodes()
        if not live:
            return self.home
        return live[(zlib.crc32(key.encode()) + index) % len(live)].channel

    def node(self, node_id: int) -> Node | None:
        if node_id == self.node_id:
            return self._me()
        return self.nodes.get(node_id)
