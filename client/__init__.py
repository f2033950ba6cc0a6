"""crossbit.client: sync and asyncio clients for the crossbit gRPC service (no torch, no faiss)."""

from crossbit.client.client import AsyncClient, Client, Encoded, Hit
from crossbit.client.errors import (
    CrossbitError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = ["AsyncClient", "Client", "Encoded", "Hit", "CrossbitError", "DeadlineExceeded",
           "InvalidArgument", "NotFound", "ResourceExhausted", "Unauthenticated", "Unavailable"]
