"""Consumer groups: the group coordinator of this broker.

    journal.py      durable group/offset records on s2core streams (snapshot + trim)
    offsets.py      committed offsets in memory (pure)
    classic.py      the classic rebalance protocol (JoinGroup/SyncGroup/Heartbeat/LeaveGroup)
    consumer.py     KIP-848 consumer groups (ConsumerGroupHeartbeat, server-side assignment)
    assignors.py    server-side assignors: uniform and range (pure)
    protocol.py     the consumer embedded protocol's Subscription, as far as we read it (pure)
    coordinator.py  owns the groups, the journal and the session reaper

The services in broker/services/ (one per group API) call the coordinator, found as
`broker.extensions["groups"]`.
"""
