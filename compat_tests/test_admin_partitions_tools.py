"""kafka-python's admin tools for partitions and hanging transactions against one broker
process: DescribeTopicPartitions paged by its cursor, ElectLeaders (no election needed on
one broker, unknown partitions refused), and the administrator's abort of a hanging
transaction (KIP-664: DescribeProducers, then WriteTxnMarkers to the leader), after which
read_committed consumers move past it."""
from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kafka import TopicPartition as KTP
from kafka.admin import AbortTransactionSpec
from kafka.errors import UnknownTopicOrPartitionError


def make_topic(broker, name: str, partitions: int) -> None:
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in a.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result()


def test_describe_topic_partitions_pages_with_a_cursor(broker, topic_name):
    make_topic(broker, topic_name, 5)
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    seen, cursor, missing = [], None, []
    for _ in range(10):
        page = a.describe_topic_partitions([topic_name, "a-no-such-topic"],
                                           response_partition_limit=2, cursor=cursor)
        topics = {t["name"]: t for t in page["topics"]}
        if "a-no-such-topic" in topics:  # (sorted first: on the first page only)
            missing.append(topics["a-no-such-topic"]["error_code"])
        mine = topics.get(topic_name)
        if mine is not None:
            assert mine["error_code"] == 0
            seen += [(p["partition_index"], p["leader_id"], p["replica_nodes"])
                     for p in mine["partitions"]]
            assert len(mine["partitions"]) <= 2
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert missing == [UnknownTopicOrPartitionError.errno]
    assert all(leader == 0 and replicas == [0] for _, leader, replicas in seen)
    a.close()


def test_elect_leaders_needs_no_election_on_one_broker(broker, topic_name):
    make_topic(broker, topic_name, 2)
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    r = a.elect_leaders(0, {topic_name: [0, 1]})  # ELECTION_NOT_NEEDED is not an error
    assert {p.error_code for t in r.replica_election_results for p in t.partition_result} \
        == {84}
    with pytest.raises(UnknownTopicOrPartitionError):
        a.elect_leaders(0, {topic_name: [7]})
    a.close()


def test_an_administrator_aborts_a_hanging_transaction(broker, topic_name):
    make_topic(broker, topic_name, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap,
                  "transactional.id": f"hang-{uuid.uuid4().hex[:6]}",
                  "transaction.timeout.ms": 600000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic_name, value=b"hanging", partition=0)
    assert p.flush(30) == 0
    # (the producer goes away without ending it: the transaction hangs for 10 minutes)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce(topic_name, value=b"after", partition=0)
    assert plain.flush(30) == 0
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    state = a.describe_producers([KTP(topic_name, 0)])
    [part] = state.values() if isinstance(state, dict) else state
    producers = part.active_producers if hasattr(part, "active_producers") else part
    [hanging] = [s for s in producers if s.current_transaction_start_offset >= 0]
    assert hanging.current_transaction_start_offset == 0
    a.abort_transaction(AbortTransactionSpec(KTP(topic_name, 0), hanging.producer_id,
                                             hanging.producer_epoch))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": uuid.uuid4().hex,
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic_name, 0, 0)])
    got, deadline = [], time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == [b"after"], "the aborted record is skipped, the next one is served"
    a.close()
