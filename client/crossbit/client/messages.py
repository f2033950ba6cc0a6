"""What both clients share: channel options, the retry policy, messages to and from Python."""

from __future__ import annotations

import io
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from crossbit.v1 import crossbit_pb2 as pb

MODALITY = {"image": pb.IMAGE, "text": pb.TEXT}
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
MAX_MESSAGE_BYTES = 64 << 20


def channel_options(max_message_bytes: int, round_robin: bool) -> list[tuple[str, object]]:
    """gRPC channel options of both clients: message sizes both ways (gRPC's default is
    4 MB), and client-side round robin over every address the target resolves to."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)]
    if round_robin:
        options.append(("grpc.lb_policy_name", "round_robin"))
    return options


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def retry_delays(retries: int, retry: bool = True) -> Iterator[float | None]:
    """The retry policy: before each attempt, the seconds to wait first (0 for the first
    attempt, then exponential backoff with jitter, at most 2 s); the attempt after the last
    is None (give up). Only UNAVAILABLE is retried (``RETRYABLE``)."""
    attempts = 1 + max(0, retries) if retry else 1
    for attempt in range(attempts):
        yield 0.0 if attempt == 0 else min(2.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random())
    yield None


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


def hits(response: pb.SearchResponse) -> list[Hit]:
    names = {pb.IMAGE: "image", pb.TEXT: "text"}
    return [Hit(h.id, h.key, h.distance, h.score, dict(h.metadata),
                names.get(h.modality, "image")) for h in response.hits]


def search_request(text=None, image=None, code=None, top_k=10, radius=None,
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


def encode_request(texts, images, embeddings: bool) -> pb.EncodeRequest:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings")
    return pb.EncodeRequest(texts=list(texts), images=[_image_bytes(i) for i in images],
                            return_embeddings=embeddings)


def encoded(r: pb.EncodeResponse, embeddings: bool) -> Encoded:
    width = r.bits // 8

    def codes(rows):
        return np.frombuffer(b"".join(e.code for e in rows), np.uint8).reshape(len(rows), width)

    def floats(rows):
        return np.array([list(e.embedding) for e in rows], np.float32) if embeddings else None

    return Encoded(r.bits, codes(r.texts), codes(r.images), floats(r.texts), floats(r.images))


def stats(s: pb.Stats) -> dict:
    return {"images": s.images, "texts": s.texts, "index_kind": s.index_kind, "bits": s.bits,
            "model": s.model, "gpu": s.gpu, "uptime_s": s.uptime_s,
            "index_params": json.loads(s.index_params or "{}"), "version": s.version}


def _metadata(meta: dict | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (meta or {}).items()}


def text_items(texts: Sequence[str], keys, metadata) -> list[pb.TextItem]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings")
    return [pb.TextItem(text=t, key=(keys[n] if keys else ""),
                        metadata=_metadata(metadata[n] if metadata else None))
            for n, t in enumerate(texts)]


def image_items(images, keys, metadata) -> Iterator[pb.ImageItem]:
    for n, image in enumerate(images):
        key = keys[n] if keys is not None else _key_for(image)
        meta = metadata[n] if metadata is not None else {}
        yield pb.ImageItem(key=key or "", image=_image_bytes(image), metadata=_metadata(meta))


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


class Progress:
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


def credentials(tls: bool | str | None):
    if not tls:
        return None
    root = None
    if isinstance(tls, (str, os.PathLike)):
        with open(tls, "rb") as f:
            root = f.read()
    return grpc.ssl_channel_credentials(root_certificates=root)


