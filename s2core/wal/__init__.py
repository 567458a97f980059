"""The chunk store: a quorum-replicated write-ahead log of multi-stream chunks."""
