"""The blocking client: one call per RPC, retried on UNAVAILABLE by the shared policy."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossbit.client import results
from crossbit.client.calls import Calls
from crossbit.client.errors import from_rpc_error
from crossbit.client.messages import (
    MAX_MESSAGE_BYTES,
    RETRYABLE,
    Prepared,
    Progress,
    auth_metadata,
    channel_options,
    credentials,
    image_items,
    retry_delays,
)
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc


class Client(Calls):
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
        collection: the collection of every call that names none (``default``).
    """

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None,
                 tls: bool | str | None = None, timeout: float = 30.0, retries: int = 3,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, round_robin: bool = False,
                 collection: str = "default"):
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
        self.collection = collection

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

    def _run(self, rpc, request, read, timeout=None, retry=True):
        return read(self._call(getattr(self.stub, rpc), request, timeout, retry))

    def _then(self, result, read):
        return read(result)

    def _value(self, value):
        return value

    def add_images(self, images: Iterable, keys: Sequence[str] | None = None,
                   metadata: Sequence[dict] | None = None, progress: bool | None = None,
                   timeout: float | None = None, collection: str | None = None) -> results.Added:
        """Add images (paths, bytes or PIL images), streamed; returns an id per image (None
        where refused), a list that also counts what was added, replaced, unchanged and
        refused (``.refusals`` says why). A file that cannot be read is refused by name and
        the others go on."""
        return results.Added(self.add_images_detailed(images, keys, metadata, progress, timeout,
                                                      collection))

    def add_images_detailed(self, images: Iterable, keys=None, metadata=None,
                            progress: bool | None = None, timeout: float | None = None,
                            collection: str | None = None):
        """The server's answer to a streamed add: a result per image and the counts."""
        images = list(images)
        prepared = Prepared(len(images), keys)
        bar = Progress(len(images), progress if progress is not None else len(images) > 50)

        def stream():
            for item in image_items(images, keys, metadata, prepared, self._coll(collection)):
                yield item
                bar.update(1)

        try:
            response = self._call(self.stub.AddImagesStream, stream(), timeout, retry=False)
        finally:
            bar.close()
        return results.merged(response, prepared.sent, prepared.refused, prepared.keys)

    def scroll(self, filter: str | None = None, modality: str = "image", page_size: int = 100,
               with_codes: bool = False, with_embeddings: bool = False,
               timeout: float | None = None, collection: str | None = None
               ) -> Iterator[results.Item]:
        """Every item (that the filter selects) in id order, page after page, each exactly
        once even while others write."""
        cursor = ""
        while True:
            items, cursor = self.scroll_page(cursor, filter, modality, page_size, with_codes,
                                             with_embeddings, timeout, collection)
            yield from items
            if not cursor:
                return

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
