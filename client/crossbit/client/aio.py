"""The asyncio client (grpc.aio): the same calls, options and retry policy as the blocking one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossbit.client import results
from crossbit.client.calls import Calls
from crossbit.client.errors import from_rpc_error
from crossbit.client.messages import (
    MAX_MESSAGE_BYTES,
    RETRYABLE,
    Prepared,
    auth_metadata,
    channel_options,
    credentials,
    image_items,
    retry_delays,
)
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc


class AsyncClient(Calls):
    """The asyncio twin of :class:`~crossbit.client.Client`: the same arguments and calls,
    awaited (progress bars aside: ``add_images`` streams without one; ``scroll`` is an async
    iterator)."""

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None,
                 tls: bool | str | None = None, timeout: float = 30.0, retries: int = 3,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, round_robin: bool = False,
                 collection: str = "default"):
        options = channel_options(max_message_bytes, round_robin)
        creds = credentials(tls)
        self.address = address
        self.channel = grpc.aio.secure_channel(address, creds, options) if creds else \
            grpc.aio.insecure_channel(address, options)
        self.stub = pb_grpc.RetrievalStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = auth_metadata(token)
        self.timeout, self.retries = timeout, retries
        self.collection = collection

    async def _call(self, method, request, timeout=None, retry=True):
        delays = retry_delays(self.retries, retry)
        delay = next(delays)
        while True:
            await asyncio.sleep(delay)
            try:
                return await method(request, timeout=timeout or self.timeout,
                                    metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                delay = next(delays)
                if exc.code() in RETRYABLE and delay is not None:
                    continue
                raise from_rpc_error(exc, self.address) from None

    async def _run(self, rpc, request, read, timeout=None, retry=True):
        return read(await self._call(getattr(self.stub, rpc), request, timeout, retry))

    async def _then(self, result, read):
        return read(await result)

    async def _value(self, value):
        return value

    async def add_images(self, images: Iterable, keys: Sequence[str] | None = None,
                         metadata: Sequence[dict] | None = None, timeout: float | None = None,
                         collection: str | None = None) -> results.Added:
        return results.Added(await self.add_images_detailed(images, keys, metadata, timeout,
                                                            collection))

    async def add_images_detailed(self, images: Iterable, keys=None, metadata=None,
                                  timeout: float | None = None, collection: str | None = None):
        """Streamed like the blocking client's (no single message holds every image)."""
        images = list(images)
        prepared = Prepared(len(images), keys)

        async def stream():
            for item in image_items(images, keys, metadata, prepared, self._coll(collection)):
                yield item

        response = await self._call(self.stub.AddImagesStream, stream(), timeout, retry=False)
        return results.merged(response, prepared.sent, prepared.refused, prepared.keys)

    async def scroll(self, filter: str | None = None, modality: str = "image",
                     page_size: int = 100, with_codes: bool = False,
                     with_embeddings: bool = False, timeout: float | None = None,
                     collection: str | None = None) -> AsyncIterator[results.Item]:
        cursor = ""
        while True:
            items, cursor = await self.scroll_page(cursor, filter, modality, page_size,
                                                   with_codes, with_embeddings, timeout,
                                                   collection)
            for item in items:
                yield item
            if not cursor:
                return

    async def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        r = await self._call(self.health_stub.Check,
                             health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
