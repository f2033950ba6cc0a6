"""The blocking client: one call per RPC, retried on UNAVAILABLE by the shared policy."""

from __future__ import annotations

import time
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
    Progress,
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


class Client:
    """A blocking client.

    Args:
        address: ``host:port`` of the server, or any gRPC target naming several replicas
            (``dns:///crossbit.internal:50051``, ``ipv4:10.0.0.1:50051,10.0.0.2:50051``).
        token: bearer token when the server requires one.
        tls: True for TLS with the system roots, or a path to a PEM CA certificate.
        timeout: default deadline per call, seconds.
        retries: further attempts after an UNAVAILABLE (exponential backoff and jitter);
            0 tries once.
        max_message_bytes: the largest message sent or received (gRPC's default is 4 MB).
        round_robin: spread calls over every address the target resolves to (gRPC's
            client-side ``round_robin``), instead of keeping to the first.
    """

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None,
                 tls: bool | str | None = None, timeout: float = 30.0, retries: int = 3,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, round_robin: bool = False):
        options = channel_options(max_message_bytes, round_robin)
        creds = credentials(tls)
        self.address = address
        self.channel = grpc.secure_channel(address, creds, options) if creds else \
            grpc.insecure_channel(address, options)
        self.stub = pb_grpc.RetrievalStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = auth_metadata(token)
        self.timeout = timeout
        self.retries = retries

    def _call(self, method, request, timeout=None, retry=True):
        delays = retry_delays(self.retries, retry)
        delay = next(delays)
        while True:
            time.sleep(delay)
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as exc:
                delay = next(delays)
                if exc.code() in RETRYABLE and delay is not None:
                    continue
                raise from_rpc_error(exc, self.address) from None

    def encode(self, texts: Sequence[str] = (), images: Sequence = (),
               embeddings: bool = False, timeout: float | None = None) -> Encoded:
        """Codes (and optionally float embeddings) of texts and images."""
        request = encode_request(texts, images, embeddings)
        return encoded(self._call(self.stub.Encode, request, timeout), embeddings)

    def add_images(self, images: Iterable, keys: Sequence[str] | None = None,
                   metadata: Sequence[dict] | None = None, progress: bool | None = None,
                   timeout: float | None = None) -> Added:
        """Add images (paths, bytes or PIL images), streamed; returns an id per image (None
        where the server refused it), a list that also counts what was added, replaced,
        unchanged and refused (``.refusals`` says why)."""
        return Added(self.add_images_detailed(images, keys, metadata, progress, timeout))

    def add_images_detailed(self, images: Iterable, keys=None, metadata=None,
                            progress: bool | None = None, timeout: float | None = None
                            ) -> pb.AddResponse:
        """The server's answer to a streamed add: a result per image and the counts."""
        images = list(images)
        bar = Progress(len(images), progress if progress is not None else len(images) > 50)

        def stream():
            for item in image_items(images, keys, metadata):
                yield item
                bar.update(1)

        try:
            return self._call(self.stub.AddImagesStream, stream(), timeout, retry=False)
        finally:
            bar.close()

    def add_texts(self, texts: Sequence[str], keys: Sequence[str] | None = None,
                  metadata: Sequence[dict] | None = None,
                  timeout: float | None = None) -> Added:
        """Add texts; returns an id per text (None where refused: :meth:`add_texts_detailed`
        says why)."""
        return Added(self.add_texts_detailed(texts, keys, metadata, timeout))

    def add_texts_detailed(self, texts: Sequence[str], keys: Sequence[str] | None = None,
                           metadata: Sequence[dict] | None = None,
                           timeout: float | None = None) -> pb.AddResponse:
        """The server's answer: a result per text (ok, id, outcome added/replaced/unchanged,
        or error) and the counts."""
        request = pb.AddTextsRequest(items=text_items(texts, keys, metadata))
        return self._call(self.stub.AddTexts, request, timeout)

    def search(self, text: str | None = None, image=None, code=None, top_k: int = 10,
               radius: int | None = None, modality: str = "image", rerank: bool | None = None,
               nprobe: int = 0, timeout: float | None = None, fresh: bool = False) -> list[Hit]:
        """Search by one of text, image (path, bytes, PIL) or code (bytes or uint8 array).

        ``fresh``: see every write acknowledged before this call, through any server of a
        scaled-out deployment (one Milvus time tick slower; see docs/milvus.md).
        """
        request = search_request(text, image, code, top_k, radius, modality, rerank, nprobe,
                                 fresh)
        return hits(self._call(self.stub.Search, request, timeout))

    def search_batch(self, queries: Sequence[dict], timeout: float | None = None) -> list[list[Hit]]:
        """Many queries in one call; each query is a dict of :meth:`search`'s arguments."""
        request = pb.SearchBatchRequest(queries=[search_request(**q) for q in queries])
        return [hits(r) for r in self._call(self.stub.SearchBatch, request, timeout).results]

    def delete(self, ids: Sequence[int] = (), keys: Sequence[str] = (),
               modality: str = "image", timeout: float | None = None) -> int:
        """Delete items by id or key; returns how many were deleted."""
        request = pb.DeleteRequest(ids=list(ids), keys=list(keys), modality=MODALITY[modality])
        return self._call(self.stub.Delete, request, timeout).deleted

    def stats(self, timeout: float | None = None) -> dict:
        return stats(self._call(self.stub.GetStats, pb.GetStatsRequest(), timeout))

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """``SERVING``, ``NOT_SERVING``... (health needs no token)."""
        r = self._call(self.health_stub.Check, health_pb2.HealthCheckRequest(service=service),
                       timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

