"""The earlier name of ``tests.helpers``, for imports not moved yet; new code imports
``tests.helpers``, where these are defined."""

from tests.helpers import checkpoint, config, durable_ids, eventually, ids_of, put_chain

__all__ = ["checkpoint", "config", "durable_ids", "eventually", "ids_of", "put_chain"]
