"""Shared by DescribeAcls, CreateAcls and DeleteAcls: what they answer without an authorizer
(`server.kafka_authorizer` off: Kafka answers every ACL request with SECURITY_DISABLED and
this message), and who may call them (broker/acls.py)."""
from broker.acls import ALTER, CLUSTER, DESCRIBE

NO_AUTHORIZER = "No Authorizer is configured on the broker"
DESCRIBE_CLUSTER = (DESCRIBE, CLUSTER)
ALTER_CLUSTER = (ALTER, CLUSTER)
