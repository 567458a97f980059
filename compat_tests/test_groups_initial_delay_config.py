"""kafka.group_initial_rebalance_delay_ms: consumers started together form one generation."""
import shutil
import tempfile
import threading
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from brokerproc import start_broker


def test_initial_delay_lets_consumers_started_together_share_the_first_generation():
    d = tempfile.mkdtemp(prefix="s2kafka-delay-")
    b = start_broker(d, extra=["--set", "kafka.group_initial_rebalance_delay_ms=1500"])
    try:
        topic = f"delay-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        for f in admin.create_topics([NewTopic(topic, 4, 1)]).values():
            f.result(30)
        group = f"g-{uuid.uuid4().hex[:8]}"
        assigned: dict[int, list] = {0: [], 1: []}
        consumers = []
        for i in range(2):
            c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                          "session.timeout.ms": 10000, "enable.auto.commit": False,
                          "partition.assignment.strategy": "range"})
            c.subscribe([topic], on_assign=lambda c_, ps, i=i: assigned[i].append(
                sorted(p.partition for p in ps)))
            consumers.append(c)
        stop = time.monotonic() + 20
        done = threading.Event()

        def poll(c):
            while not done.is_set() and time.monotonic() < stop:
                c.poll(0.1)

        threads = [threading.Thread(target=poll, args=(c,)) for c in consumers]
        for t in threads:
            t.start()
        while time.monotonic() < stop and not (assigned[0] and assigned[1]):
            time.sleep(0.1)
        time.sleep(2)  # a second rebalance, if any, would show up here
        done.set()
        for t in threads:
            t.join()
        for c in consumers:
            c.close()
        # one assignment each (no rebalance after the delayed first join), together all 4
        assert len(assigned[0]) == 1 and len(assigned[1]) == 1, assigned
        assert sorted(assigned[0][0] + assigned[1][0]) == [0, 1, 2, 3]
        assert assigned[0][0] and assigned[1][0]
    finally:
        b.stop()
        shutil.rmtree(d, ignore_errors=True)
