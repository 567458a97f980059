"""Object stores: the one small interface behind chunk replicas and segments."""
from s2core.objstore.base import ObjectStore, ObjectExists, ObjectNotFound, PreconditionError

__all__ = ["ObjectStore", "ObjectExists", "ObjectNotFound", "PreconditionError"]
