"""What DescribeAcls, CreateAcls and DeleteAcls answer: this broker has no authorizer (an
authenticated SASL user or certificate may do everything, decision 0013), and Kafka without
one answers every ACL request with SECURITY_DISABLED and this message."""
NO_AUTHORIZER = "No Authorizer is configured on the broker"
