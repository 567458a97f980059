"""ConsumerGroupHeartbeat (KIP-848): join, stay, reconcile and leave a consumer group."""
import re

from broker.acls import GROUP, READ
from broker.groups.assignors import ASSIGNORS
from broker.groups.consumer import HeartbeatError
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.consumer_group_heartbeat_response import (
    Assignment,
    ConsumerGroupHeartbeatResponse,
    TopicPartitions,
)
from broker.services.join_group import client_host
from s2core.errors import S2Error

API_KEY = 68
VERSIONS = (0, 1)
# The spec copy marks v1 unstable; it is stable since Kafka 4.0, and librdkafka 2.10+
# sends only v1, so it is advertised (see Broker.api_versions).
ADVERTISED_MAX = 1


def _error(code, message, member_id=None, epoch=0):
    return ConsumerGroupHeartbeatResponse(throttle_time_ms=0, error_code=code,
                                          error_message=message, member_id=member_id,
                                          member_epoch=epoch, heartbeat_interval_ms=0)


def _check(request) -> HeartbeatError | None:
    if not request.group_id:
        return HeartbeatError(ErrorCode.INVALID_REQUEST, "GroupId can't be empty.")
    if request.member_epoch < -2:
        return HeartbeatError(ErrorCode.INVALID_REQUEST, "MemberEpoch is invalid.")
    if request.server_assignor is not None and request.server_assignor not in ASSIGNORS:
        return HeartbeatError(ErrorCode.UNSUPPORTED_ASSIGNOR,
                              f"ServerAssignor {request.server_assignor} is not supported. "
                              f"Supported assignors: {', '.join(sorted(ASSIGNORS))}.")
    regex = getattr(request, "subscribed_topic_regex", None)
    if regex:
        try:
            re.compile(regex)
        except re.error as e:
            return HeartbeatError(ErrorCode.INVALID_REGULAR_EXPRESSION,
                                  f"SubscribedTopicRegex {regex!r} is not a valid "
                                  f"regular expression: {e}.")
    return None


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    err = _check(request)
    if err is not None:
        return _error(err.code, err.message, request.member_id or None)
    if not broker.allowed(conn, READ, GROUP, request.group_id):
        return _error(ErrorCode.GROUP_AUTHORIZATION_FAILED, "Group authorization failed.",
                      request.member_id or None)
    if coord.not_here(request.group_id):
        return _error(ErrorCode.NOT_COORDINATOR, "This is not the group's coordinator.",
                      request.member_id or None)
    existed = coord.group(request.group_id) is not None
    group = coord.consumer(request.group_id, create=request.member_epoch == 0)
    if group is None:
        return _error(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {request.group_id} not found.",
                      request.member_id or None)
    if isinstance(group, int):
        return _error(group, f"Group {request.group_id} is not a consumer group.",
                      request.member_id or None)
    before = group.to_json()
    try:
        member, send = group.heartbeat(request, header.request_api_version,
                                       header.client_id or "", client_host(conn))
    except HeartbeatError as e:
        if not existed and group.is_empty():
            coord.forget(request.group_id)  # a refused first heartbeat leaves no group
        return _error(e.code, e.message, request.member_id or None)
    resp = ConsumerGroupHeartbeatResponse(
        throttle_time_ms=0, error_code=0, error_message=None, member_id=member.member_id,
        member_epoch=member.epoch,
        heartbeat_interval_ms=coord.config.consumer_heartbeat_interval_ms,
        assignment=None if send is None else _assignment(broker, send))
    if group.to_json() == before:
        return resp
    return _stored(coord.spawn(coord.persist(group)), resp)


def _assignment(broker, parts) -> Assignment:
    out = []
    for name, ps in sorted(parts.items()):
        topic = broker.topics.get(name)
        if topic is not None:
            out.append(TopicPartitions(topic_id=topic.id, partitions=sorted(ps)))
    return Assignment(topic_partitions=out)


async def _stored(stored, resp):
    try:
        await stored
    except S2Error:  # not durable: the member retries
        return _error(ErrorCode.COORDINATOR_NOT_AVAILABLE, "the group could not be stored",
                      resp.member_id, resp.member_epoch)
    return resp
