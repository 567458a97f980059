"""Kafka-compatible broker: wire protocol and services on top of s2core."""
