"""Tests of the Kafka protocol codec (broker.protocol)."""
