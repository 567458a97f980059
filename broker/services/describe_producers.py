"""DescribeProducers: the idempotent producers a partition knows (broker/producers.py), as
`kafka-transactions.sh describe-producers` shows them: id, epoch, last sequence and the
broker time of their last batch, and the offset at which a transaction of theirs open in
the partition starts (broker/transactions.py; -1: none)."""
from broker.acls import READ, TOPIC
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.describe_producers_response import (
    DescribeProducersResponse,
    PartitionResponse,
    ProducerState,
    TopicResponse,
)

API_KEY = 61
VERSIONS = (0, 0)


async def handle(broker, conn, header, request):
    topics = []
    for t in request.topics:
        topic = broker.topics.get(t.name)
        denied = not broker.allowed(conn, READ, TOPIC, t.name)
        parts = []
        for index in t.partition_indexes:
            if denied or topic is None or not 0 <= index < topic.partitions:
                parts.append(PartitionResponse(
                    partition_index=index, error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED
                    if denied else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    error_message=None, active_producers=[]))
                continue
            st = await broker.producers.state(t.name, index)
            txns = await broker.extensions["txn"].partition(t.name, index)
            parts.append(PartitionResponse(
                partition_index=index, error_code=0, error_message=None, active_producers=[
                    ProducerState(producer_id=pid, producer_epoch=e.epoch,
                                  last_sequence=e.batches[-1].last_seq if e.batches else -1,
                                  last_timestamp=e.last_ms,
                                  coordinator_epoch=txns.cepochs.get(pid, -1),
                                  current_txn_start_offset=txns.ongoing.get(pid, -1))
                    for pid, e in sorted(st.items())]))
        topics.append(TopicResponse(name=t.name, partitions=parts))
    return DescribeProducersResponse(throttle_time_ms=0, topics=topics)
