"""Idempotent produce: resent batches come back with their original offsets and are stored
once; sequence gaps and fenced epochs get Kafka's error codes; a confluent-kafka idempotent
producer whose connections are cut mid-stream writes every record exactly once, in order."""
from __future__ import annotations

import json
import socket
import threading
import time

from confluent_kafka import Producer

from broker.protocol.errors import ErrorCode
from broker.protocol.messages.init_producer_id_request import InitProducerIdRequest
from test_bad_input import PRODUCE, Wire, create_topic, fetch_values, produce_request
from test_produce_fetch import kp_consume

from broker.protocol.records import Record, build_batch

INIT_PRODUCER_ID = 22


def _batch(values, pid, epoch, seq) -> bytes:
    now = int(time.time() * 1000)
    return bytes(build_batch([Record(i, now, None, v) for i, v in enumerate(values)],
                             producer_id=pid, producer_epoch=epoch, base_sequence=seq))


def _produce(w: Wire, topic: str, batch: bytes) -> tuple[int, int]:
    resp = w.call(PRODUCE, 9, produce_request(topic, batch))
    p = resp.responses[0].partition_responses[0]
    return p.error_code, p.base_offset


def _init(w: Wire, pid: int = -1, epoch: int = -1) -> tuple[int, int]:
    resp = w.call(INIT_PRODUCER_ID, 4, InitProducerIdRequest(
        transactional_id=None, transaction_timeout_ms=60_000, producer_id=pid,
        producer_epoch=epoch))
    assert resp.error_code == 0
    return resp.producer_id, resp.producer_epoch


def test_resent_batches_keep_their_offsets_and_bad_sequences_are_refused(broker, topic_name):
    w = Wire(broker.bootstrap)
    try:
        create_topic(w, topic_name)
        pid, epoch = _init(w)
        assert pid >= 0 and epoch == 0
        a = _batch([b"a0", b"a1", b"a2"], pid, 0, 0)
        assert _produce(w, topic_name, a) == (0, 0)
        assert _produce(w, topic_name, a) == (0, 0)  # the same batch again: same offset
        w2 = Wire(broker.bootstrap)  # and again over a new connection
        assert _produce(w2, topic_name, a) == (0, 0)
        w2.close()
        # a gap in the sequence
        assert _produce(w, topic_name, _batch([b"gap"], pid, 0, 5)) == \
            (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, -1)
        b = _batch([b"b0", b"b1"], pid, 0, 3)
        assert _produce(w, topic_name, b) == (0, 3)
        assert _produce(w, topic_name, a) == (0, 0)  # still cached: one of the last five
        # the producer bumps its epoch (KIP-360); the old epoch is fenced
        assert _init(w, pid, 0) == (pid, 1)
        assert _produce(w, topic_name, _batch([b"old"], pid, 0, 5)) == (0, 5)
        assert _produce(w, topic_name, _batch([b"new"], pid, 1, 0)) == (0, 6)
        assert _produce(w, topic_name, _batch([b"zombie"], pid, 0, 6)) == \
            (ErrorCode.INVALID_PRODUCER_EPOCH, -1)
        # a new epoch must start at sequence 0
        pid2, _ = _init(w)
        assert _produce(w, topic_name, _batch([b"p2"], pid2, 0, 0)) == (0, 7)
        assert _init(w, pid2, 0) == (pid2, 1)
        assert _produce(w, topic_name, _batch([b"p2-late"], pid2, 1, 1)) == \
            (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, -1)
        assert fetch_values(w, topic_name) == \
            [b"a0", b"a1", b"a2", b"b0", b"b1", b"old", b"new", b"p2"]
    finally:
        w.close()


class CuttingProxy:
    """A TCP proxy in front of the broker whose connections can all be cut at once."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cuts = 0
        self.swallow = False  # drop what the broker sends: acks that never arrive
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b, resp in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(a, b, resp), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, responses: bool) -> None:
        try:
            while data := src.recv(65536):
                if not (responses and self.swallow):
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.cuts += 1

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_idempotent_producer_survives_cut_connections_without_duplicates(tmp_path):
    from brokerproc import start_broker
    b = start_broker(str(tmp_path / "data"))
    host, port = b.bootstrap.rsplit(":", 1)
    proxy = CuttingProxy((host, int(port)))
    b.stop()  # again, now advertising the proxy, so every client connection goes through it
    b = start_broker(str(tmp_path / "data"), kafka_port=int(port),
                     extra=["--set", f"server.kafka_advertised=127.0.0.1:{proxy.port}"])
    try:
        via = f"127.0.0.1:{proxy.port}"
        stats: list[str] = []
        topic = "idem"
        w = Wire(b.bootstrap)
        create_topic(w, topic)
        w.close()
        p = Producer({"bootstrap.servers": via, "enable.idempotence": True, "acks": "all",
                      "linger.ms": 2, "batch.num.messages": 50,
                      "max.in.flight.requests.per.connection": 5,
                      "retry.backoff.ms": 20, "reconnect.backoff.ms": 10,
                      "statistics.interval.ms": 100, "stats_cb": stats.append})
        errors = []
        n, rounds = 3000, 15
        for r in range(rounds):
            for i in range(r * n // rounds, (r + 1) * n // rounds):
                p.produce(topic, value=b"%d" % i, partition=0,
                          on_delivery=lambda err, m: err and errors.append(err))
            if r % 3 == 2:
                assert p.flush(30) == 0  # some rounds complete normally
                continue
            proxy.swallow = True  # the broker stores the batches, the acks are lost ...
            p.poll(0.1)
            proxy.cut()  # ... and the connection drops: the producer must resend
            proxy.swallow = False
        assert p.flush(60) == 0
        assert errors == []
        assert proxy.cuts == 10
        time.sleep(0.3)
        p.poll(0)
        sent = json.loads(stats[-1])["topics"][topic]["partitions"]["0"]["txmsgs"]
        assert sent > n, "no batch was resent: the cuts tested nothing"
        got = kp_consume(b, topic, n, timeout=60)
        assert [r.value for r in got] == [b"%d" % i for i in range(n)]
        assert [r.offset for r in got] == list(range(n))
    finally:
        proxy.close()
        b.stop()
