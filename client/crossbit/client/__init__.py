"""crossbit.client: sync and asyncio clients for the crossbit gRPC service (no torch, no faiss)."""

from crossbit.client.aio import AsyncClient
from crossbit.client.errors import (
    CrossbitError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from crossbit.client.messages import Added, Encoded, Hit
from crossbit.client.sync import Client

__all__ = ["Added", "AsyncClient", "Client", "Encoded", "Hit", "CrossbitError", "DeadlineExceeded",
           "InvalidArgument", "NotFound", "ResourceExhausted", "Unauthenticated", "Unavailable"]
