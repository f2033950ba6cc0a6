"""crossbit.client: sync and asyncio clients for the crossbit gRPC service (no torch, no faiss)."""

from crossbit.client.aio import AsyncClient
from crossbit.client.errors import (
    CrossbitError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from crossbit.client.results import Added, Count, Encoded, Hit, Item, Items
from crossbit.client.sync import Client

__all__ = ["Added", "AsyncClient", "Client", "Count", "Encoded", "Hit", "Item", "Items",
           "CrossbitError", "DeadlineExceeded", "InvalidArgument", "NotFound", "PermissionDenied",
           "ResourceExhausted", "Unauthenticated", "Unavailable"]
