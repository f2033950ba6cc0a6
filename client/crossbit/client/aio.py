"""The asyncio client (grpc.aio): the same calls, options and retry policy as the blocking one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossbit.client.errors import from_rpc_error
from crossbit.client.messages import (
    MAX_MESSAGE_BYTES,
    MODALITY,
    RETRYABLE,
    Added,
    Encoded,
    Hit,
    auth_metadata,
    channel_options,
    credentials,
    encode_request,
    encoded,
    hits,
    image_items,
    retry_delays,
    search_request,
    stats,
    text_items,
)
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc


class AsyncClient:
    """The asyncio twin of :class:`~crossbit.client.Client`: the same arguments and calls,
    awaited (progress bars aside: ``add_images`` streams without one)."""

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None,
                 tls: bool | str | None = None, timeout: float = 30.0, retries: int = 3,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, round_robin: bool = False):
        options = channel_options(max_message_bytes, round_robin)
        creds = credentials(tls)
        self.address = address
        self.channel = grpc.aio.secure_channel(address, creds, options) if creds else \
            grpc.aio.insecure_channel(address, options)
        self.stub = pb_grpc.RetrievalStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = auth_metadata(token)
        self.timeout, self.retries = timeout, retries

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

    async def encode(self, texts: Sequence[str] = (), images: Sequence = (),
                     embeddings: bool = False, timeout: float | None = None) -> Encoded:
        request = encode_request(texts, images, embeddings)
        return encoded(await self._call(self.stub.Encode, request, timeout), embeddings)

    async def add_images(self, images: Iterable, keys: Sequence[str] | None = None,
                         metadata: Sequence[dict] | None = None,
                         timeout: float | None = None) -> Added:
        return Added(await self.add_images_detailed(images, keys, metadata, timeout))

    async def add_images_detailed(self, images: Iterable, keys=None, metadata=None,
                                  timeout: float | None = None) -> pb.AddResponse:
        """Streamed like the blocking client's (no single message holds every image)."""
        images = list(images)

        async def stream():
            for item in image_items(images, keys, metadata):
                yield item

        return await self._call(self.stub.AddImagesStream, stream(), timeout, retry=False)

    async def add_texts(self, texts: Sequence[str], keys: Sequence[str] | None = None,
                        metadata: Sequence[dict] | None = None,
                        timeout: float | None = None) -> Added:
        return Added(await self.add_texts_detailed(texts, keys, metadata, timeout))

    async def add_texts_detailed(self, texts: Sequence[str], keys: Sequence[str] | None = None,
                                 metadata: Sequence[dict] | None = None,
                                 timeout: float | None = None) -> pb.AddResponse:
        request = pb.AddTextsRequest(items=text_items(texts, keys, metadata))
        return await self._call(self.stub.AddTexts, request, timeout)

    async def search(self, text: str | None = None, image=None, code=None, top_k: int = 10,
                     radius: int | None = None, modality: str = "image",
                     rerank: bool | None = None, nprobe: int = 0, timeout: float | None = None,
                     fresh: bool = False) -> list[Hit]:
        request = search_request(text, image, code, top_k, radius, modality, rerank, nprobe,
                                 fresh)
        return hits(await self._call(self.stub.Search, request, timeout))

    async def search_batch(self, queries: Sequence[dict],
                           timeout: float | None = None) -> list[list[Hit]]:
        request = pb.SearchBatchRequest(queries=[search_request(**q) for q in queries])
        return [hits(r) for r in (await self._call(self.stub.SearchBatch, request, timeout)).results]

    async def delete(self, ids: Sequence[int] = (), keys: Sequence[str] = (),
                     modality: str = "image", timeout: float | None = None) -> int:
        request = pb.DeleteRequest(ids=list(ids), keys=list(keys), modality=MODALITY[modality])
        return (await self._call(self.stub.Delete, request, timeout)).deleted

    async def stats(self, timeout: float | None = None) -> dict:
        return stats(await self._call(self.stub.GetStats, pb.GetStatsRequest(), timeout))

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
