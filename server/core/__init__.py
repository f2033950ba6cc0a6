"""crossbit.server.core: the service without gRPC or HTTP: encode, add, search, collections, batching,
call scopes, request checks and image decoding (``RetrievalCore`` is its front)."""

from crossbit.server.core.searching import HIT_OVERHEAD
from crossbit.server.core.service import SEARCH_BATCH, RetrievalCore

__all__ = ["HIT_OVERHEAD", "SEARCH_BATCH", "RetrievalCore"]
