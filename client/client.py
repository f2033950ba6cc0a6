"""Sync and asyncio clients for the crossbit service (grpc, protobuf and numpy only)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossbit.client.errors import CrossbitError, from_rpc_error
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

MODALITY = {"image": pb.IMAGE, "text": pb.TEXT}
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
STREAM_CHUNK = 32


@dataclass
class Hit:
    """One search result."""

    id: int
    key: str
    distance: int  # Hamming distance to the query code
    score: float  # cosine similarity when re-ranked, else 1 - distance / bits
    metadata: dict = field(default_factory=dict)
    modality: str = "image"


@dataclass
class Encoded:
    bits: int
    texts: np.ndarray  # uint8 (n, bits // 8)
    images: np.ndarray
    text_embeddings: np.ndarray | None = None
    image_embeddings: np.ndarray | None = None


def _image_bytes(image) -> bytes:
    """Bytes, a path, or a PIL image (encoded as PNG) -> bytes."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return f.read()
    if hasattr(image, "save"):  # a PIL image, without importing PIL here
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()
    raise TypeError(f"expected image bytes, a path or a PIL image, got {type(image).__name__}")


def _key_for(image) -> str:
    """A default key: the file's absolute path (so two folders' IMG_0001.jpg stay two items,
    and adding the same file again replaces it); none for bytes and PIL images."""
    if isinstance(image, (str, os.PathLike)):
        return os.path.realpath(image)
    return ""


def _hits(response: pb.SearchResponse) -> list[Hit]:
    names = {pb.IMAGE: "image", pb.TEXT: "text"}
    return [Hit(h.id, h.key, h.distance, h.score, dict(h.metadata),
                names.get(h.modality, "image")) for h in response.hits]


def _search_request(text=None, image=None, code=None, top_k=10, radius=None,
                    modality="image", rerank=None, nprobe=0, fresh=False) -> pb.SearchRequest:
    given = [x is not None for x in (text, image, code)]
    if sum(given) != 1:
        raise ValueError("search needs exactly one of text=, image= or code=")
    if modality not in MODALITY:
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    request = pb.SearchRequest(top_k=top_k, modality=MODALITY[modality], nprobe=nprobe,
                               fresh=fresh)
    if text is not None:
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        request.text = text
    elif image is not None:
        request.image = _image_bytes(image)
    else:
        request.code = np.asarray(code, dtype=np.uint8).tobytes() \
            if not isinstance(code, bytes) else code
    if radius is not None:
        request.radius = radius
    if rerank is not None:
        request.rerank = rerank
    return request


def _encode_request(texts, images, embeddings: bool) -> pb.EncodeRequest:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings")
    return pb.EncodeRequest(texts=list(texts), images=[_image_bytes(i) for i in images],
                            return_embeddings=embeddings)


def _encoded(r: pb.EncodeResponse, embeddings: bool) -> Encoded:
    width = r.bits // 8

    def codes(rows):
        return np.frombuffer(b"".join(e.code for e in rows), np.uint8).reshape(len(rows), width)

    def floats(rows):
        return np.array([list(e.embedding) for e in rows], np.float32) if embeddings else None

    return Encoded(r.bits, codes(r.texts), codes(r.images), floats(r.texts), floats(r.images))


def _stats(s: pb.Stats) -> dict:
    return {"images": s.images, "texts": s.texts, "index_kind": s.index_kind, "bits": s.bits,
            "model": s.model, "gpu": s.gpu, "uptime_s": s.uptime_s,
            "index_params": json.loads(s.index_params or "{}"), "version": s.version}


def _image_items(images, keys, metadata) -> Iterator[pb.ImageItem]:
    for n, image in enumerate(images):
        key = keys[n] if keys is not None else _key_for(image)
        meta = metadata[n] if metadata is not None else {}
        yield pb.ImageItem(key=key or "", image=_image_bytes(image),
                           metadata={str(k): str(v) for k, v in (meta or {}).items()})


class Added(list):
    """The ids of an add, one per item in order (None where refused), with what happened:
    ``added`` (new), ``replaced``, ``unchanged`` and ``refused`` counts, and ``refusals``
    (position, status name, reason) for the refused items."""

    def __init__(self, response: pb.AddResponse):
        results = sorted(response.results, key=lambda r: r.index)
        super().__init__(r.id if r.ok else None for r in results)
        self.replaced, self.unchanged = response.replaced, response.unchanged
        self.added = response.added - response.replaced - response.unchanged
        self.refused = response.failed
        self.refusals = [(r.index, r.error_code, r.error) for r in results if not r.ok]

    def __repr__(self) -> str:
        return (f"Added({list.__repr__(self)}, added={self.added}, replaced={self.replaced}, "
                f"unchanged={self.unchanged}, refused={self.refused})")


def _ids_from(response: pb.AddResponse) -> Added:
    return Added(response)


class _Progress:
    """A small progress line on stderr, only on a terminal (tqdm is not a client dependency);
    or a caller's own ``progress(n)`` callback."""

    def __init__(self, total: int, progress):
        self.callback = progress if callable(progress) else None
        self.total, self.done = total, 0
        self.enabled = self.callback is None and bool(progress) and total > 0 and \
            sys.stderr.isatty()
        self.start = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(n)
        elif self.enabled:
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            sys.stderr.write(f"\r\x1b[Kadding images: {self.done}/{self.total} ({rate:.1f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _credentials(tls: bool | str | None):
    if not tls:
        return None
    root = None
    if isinstance(tls, (str, os.PathLike)):
        with open(tls, "rb") as f:
            root = f.read()
    return grpc.ssl_channel_credentials(root_certificates=root)


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
        round_robin: spread calls over every address the target resolves to (gRPC's
            client-side ``round_robin``), instead of keeping to the first.
    """

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None,
                 tls: bool | str | None = None, timeout: float = 30.0, retries: int = 3,
                 max_message_bytes: int = 64 << 20, round_robin: bool = False):
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        if round_robin:
            options.append(("grpc.lb_policy_name", "round_robin"))
        creds = _credentials(tls)
        self.address = address
        self.channel = grpc.secure_channel(address, creds, options) if creds else \
            grpc.insecure_channel(address, options)
        self.stub = pb_grpc.RetrievalStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.retries = retries

    def _call(self, method, request, timeout=None, retry=True):
        attempts = 1 + max(0, self.retries) if retry else 1
        for attempt in range(attempts):
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as exc:
                if exc.code() in RETRYABLE and attempt + 1 < attempts:
                    time.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
                    continue
                raise from_rpc_error(exc, self.address) from None
        raise CrossbitError("unreachable")

    def encode(self, texts: Sequence[str] = (), images: Sequence = (),
               embeddings: bool = False, timeout: float | None = None) -> Encoded:
        """Codes (and optionally float embeddings) of texts and images."""
        request = _encode_request(texts, images, embeddings)
        return _encoded(self._call(self.stub.Encode, request, timeout), embeddings)

    def add_images(self, images: Iterable, keys: Sequence[str] | None = None,
                   metadata: Sequence[dict] | None = None, progress: bool | None = None,
                   timeout: float | None = None) -> Added:
        """Add images (paths, bytes or PIL images), streamed; returns an id per image (None
        where the server refused it), a list that also counts what was added, replaced,
        unchanged and refused (``.refusals`` says why)."""
        return _ids_from(self.add_images_detailed(images, keys, metadata, progress, timeout))

    def add_images_detailed(self, images: Iterable, keys=None, metadata=None,
                            progress: bool | None = None, timeout: float | None = None
                            ) -> pb.AddResponse:
        images = list(images)
        bar = _Progress(len(images), progress if progress is not None else len(images) > 50)

        def stream():
            for item in _image_items(images, keys, metadata):
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
        return _ids_from(self.add_texts_detailed(texts, keys, metadata, timeout))

    def add_texts_detailed(self, texts: Sequence[str], keys: Sequence[str] | None = None,
                           metadata: Sequence[dict] | None = None,
                           timeout: float | None = None) -> pb.AddResponse:
        """The server's answer: a result per text (ok, id, outcome added/replaced/unchanged,
        or error) and the counts."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings")
        items = [pb.TextItem(text=t, key=(keys[n] if keys else ""),
                             metadata={str(k): str(v) for k, v in
                                       ((metadata[n] if metadata else None) or {}).items()})
                 for n, t in enumerate(texts)]
        return self._call(self.stub.AddTexts, pb.AddTextsRequest(items=items), timeout)

    def search(self, text: str | None = None, image=None, code=None, top_k: int = 10,
               radius: int | None = None, modality: str = "image", rerank: bool | None = None,
               nprobe: int = 0, timeout: float | None = None, fresh: bool = False) -> list[Hit]:
        """Search by one of text, image (path, bytes, PIL) or code (bytes or uint8 array).

        ``fresh``: see every write acknowledged before this call, through any server of a
        scaled-out deployment (one Milvus time tick slower; see docs/milvus.md).
        """
        request = _search_request(text, image, code, top_k, radius, modality, rerank, nprobe,
                                  fresh)
        return _hits(self._call(self.stub.Search, request, timeout))

    def search_batch(self, queries: Sequence[dict], timeout: float | None = None) -> list[list[Hit]]:
        """Many queries in one call; each query is a dict of :meth:`search`'s arguments."""
        request = pb.SearchBatchRequest(queries=[_search_request(**q) for q in queries])
        return [_hits(r) for r in self._call(self.stub.SearchBatch, request, timeout).results]

    def delete(self, ids: Sequence[int] = (), keys: Sequence[str] = (),
               modality: str = "image", timeout: float | None = None) -> int:
        request = pb.DeleteRequest(ids=list(ids), keys=list(keys), modality=MODALITY[modality])
        return self._call(self.stub.Delete, request, timeout).deleted

    def stats(self, timeout: float | None = None) -> dict:
        return _stats(self._call(self.stub.GetStats, pb.GetStatsRequest(), timeout))

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """``SERVING``, ``NOT_SERVING``... (health needs no token)."""
        r = self._call(self.health_stub.Check, health_pb2.HealthCheckRequest(service=service),
                       timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of :class:`Client` (grpc.aio)."""

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None,
                 tls: bool | str | None = None, timeout: float = 30.0, retries: int = 3,
                 round_robin: bool = False):
        creds = _credentials(tls)
        self.address = address
        options = [("grpc.lb_policy_name", "round_robin")] if round_robin else []
        self.channel = grpc.aio.secure_channel(address, creds, options) if creds else \
            grpc.aio.insecure_channel(address, options)
        self.stub = pb_grpc.RetrievalStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout, self.retries = timeout, retries

    async def _call(self, method, request, timeout=None, retry=True):
        attempts = 1 + max(0, self.retries) if retry else 1
        for attempt in range(attempts):
            try:
                return await method(request, timeout=timeout or self.timeout,
                                    metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRYABLE and attempt + 1 < attempts:
                    await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
                    continue
                raise from_rpc_error(exc, self.address) from None
        raise CrossbitError("unreachable")

    async def search(self, text=None, image=None, code=None, top_k=10, radius=None,
                     modality="image", rerank=None, nprobe=0, timeout=None,
                     fresh=False) -> list[Hit]:
        request = _search_request(text, image, code, top_k, radius, modality, rerank, nprobe,
                                  fresh)
        return _hits(await self._call(self.stub.Search, request, timeout))

    async def search_batch(self, queries: Sequence[dict], timeout=None) -> list[list[Hit]]:
        request = pb.SearchBatchRequest(queries=[_search_request(**q) for q in queries])
        return [_hits(r) for r in (await self._call(self.stub.SearchBatch, request, timeout)).results]

    async def add_images(self, images, keys=None, metadata=None, timeout=None) -> Added:
        items = list(_image_items(list(images), keys, metadata))
        return _ids_from(await self._call(self.stub.AddImages,
                                          pb.AddImagesRequest(items=items), timeout))

    async def add_texts(self, texts, keys=None, timeout=None) -> Added:
        items = [pb.TextItem(text=t, key=(keys[n] if keys else "")) for n, t in enumerate(texts)]
        return _ids_from(await self._call(self.stub.AddTexts, pb.AddTextsRequest(items=items),
                                          timeout))

    async def encode(self, texts=(), images=(), embeddings=False, timeout=None) -> Encoded:
        request = _encode_request(texts, images, embeddings)
        return _encoded(await self._call(self.stub.Encode, request, timeout), embeddings)

    async def delete(self, ids=(), keys=(), modality="image", timeout=None) -> int:
        request = pb.DeleteRequest(ids=list(ids), keys=list(keys), modality=MODALITY[modality])
        return (await self._call(self.stub.Delete, request, timeout)).deleted

    async def stats(self, timeout=None) -> dict:
        return _stats(await self._call(self.stub.GetStats, pb.GetStatsRequest(), timeout))

    async def health(self, service: str = "", timeout=5.0) -> str:
        r = await self._call(self.health_stub.Check,
                             health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
