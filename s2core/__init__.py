"""s2core: an S2-style stream store.

Streams are durable, ordered sequences of records. Appends are sequenced by a channel,
written to a quorum-replicated chunk WAL, served from an in-memory tail and offloaded to
per-stream segments in an object store. See ../docs and DESIGN.md for the architecture.
"""
