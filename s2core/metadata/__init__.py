"""Metadata stores: the minimal conditional key-value interface."""
from s2core.metadata.base import (
    MetadataStore,
    Versioned,
    VersionMismatch,
    Op,
)

__all__ = ["MetadataStore", "Versioned", "VersionMismatch", "Op"]
