"""ConsumerGroupDescribe (KIP-848): epochs, members, assignments and targets."""
from broker.acls import DESCRIBE, GROUP
from broker.groups.consumer import ConsumerGroup
from broker.protocol.errors import ErrorCode
from broker.protocol.messages.consumer_group_describe_response import (
    Assignment,
    ConsumerGroupDescribeResponse,
    DescribedGroup,
    Member,
    TopicPartitions,
)
from broker.services._common import NO_AUTH_OPS

API_KEY = 69
VERSIONS = (0, 0)


def _assignment(broker, parts) -> Assignment:
    out = []
    for name, ps in sorted(parts.items()):
        topic = broker.topics.get(name)
        if topic is not None:
            out.append(TopicPartitions(topic_id=topic.id, topic_name=name,
                                       partitions=sorted(ps)))
    return Assignment(topic_partitions=out)


def _describe(broker, coord, gid):
    if coord.not_here(gid):
        return DescribedGroup(error_code=ErrorCode.NOT_COORDINATOR,
                              error_message="This is not the group's coordinator.",
                              group_id=gid, group_state="", group_epoch=-1,
                              assignment_epoch=-1, assignor_name="", members=[],
                              authorized_operations=NO_AUTH_OPS)
    group = coord.group(gid)
    if not isinstance(group, ConsumerGroup):
        msg = f"Group {gid} not found." if group is None \
            else f"Group {gid} is not a consumer group."
        return DescribedGroup(error_code=ErrorCode.GROUP_ID_NOT_FOUND, error_message=msg,
                              group_id=gid, group_state="Dead", group_epoch=-1,
                              assignment_epoch=-1, assignor_name="", members=[],
                              authorized_operations=NO_AUTH_OPS)
    members = [Member(member_id=m.member_id, instance_id=m.instance_id, rack_id=m.rack_id,
                      member_epoch=m.epoch, client_id=m.client_id, client_host=m.client_host,
                      subscribed_topic_names=sorted(m.topic_names),
                      subscribed_topic_regex=m.topic_regex,
                      assignment=_assignment(broker, m.assigned),
                      target_assignment=_assignment(broker, group.target.get(m.member_id, {})))
               for m in group.members.values()]
    return DescribedGroup(error_code=0, group_id=gid, group_state=group.state,
                          group_epoch=group.epoch, assignment_epoch=group.assignment_epoch,
                          assignor_name=group.assignor_name(), members=members,
                          authorized_operations=NO_AUTH_OPS)


async def handle(broker, conn, header, request):
    coord = broker.extensions["groups"]
    groups = [
        _describe(broker, coord, gid) if broker.allowed(conn, DESCRIBE, GROUP, gid)
        else DescribedGroup(error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                            error_message="Group authorization failed.", group_id=gid,
                            group_state="", group_epoch=-1, assignment_epoch=-1,
                            assignor_name="", members=[], authorized_operations=NO_AUTH_OPS)
        for gid in request.group_ids]
    if request.include_authorized_operations:
        for g in groups:
            if g.error_code == 0:
                g.authorized_operations = broker.authorized_ops(conn, GROUP, g.group_id)
    return ConsumerGroupDescribeResponse(throttle_time_ms=0, groups=groups)
