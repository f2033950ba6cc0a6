"""What the clients return: hits, stored items, what an add or a delete did, collections, encodings,
each read from the server's answer (typed metadata as Python values)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from crossbit.v1 import crossbit_pb2 as pb

NAMES = {pb.IMAGE: "image", pb.TEXT: "text"}


def python_value(value: pb.Value):
    kind = value.WhichOneof("kind")
    if kind == "tags":
        return list(value.tags.values)
    return getattr(value, kind) if kind else None


def metadata_of(message) -> dict:
    """A hit's or item's metadata with its types (the string map for an older server)."""
    if len(message.attributes):
        return {k: python_value(v) for k, v in message.attributes.items()}
    return dict(message.metadata)


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
class Item:
    """One stored item, as ``get`` and ``scroll`` return it."""

    id: int
    key: str
    metadata: dict
    modality: str = "image"
    added: float = 0.0  # when it was last written (Unix seconds)
    code: bytes | None = None  # with_codes
    embedding: np.ndarray | None = None  # with_embeddings


@dataclass
class Encoded:
    bits: int
    texts: np.ndarray  # uint8 (n, bits // 8)
    images: np.ndarray
    text_embeddings: np.ndarray | None = None
    image_embeddings: np.ndarray | None = None


def hits(response: pb.SearchResponse) -> list[Hit]:
    return [Hit(h.id, h.key, h.distance, h.score, metadata_of(h), NAMES.get(h.modality, "image"))
            for h in response.hits]


def item(message: pb.Item, with_codes: bool = False, with_embeddings: bool = False) -> Item:
    return Item(message.id, message.key, metadata_of(message), NAMES.get(message.modality, "image"),
                message.added, message.code if with_codes else None,
                np.asarray(message.embedding, np.float32) if with_embeddings else None)


class Items(list):
    """Items found (``get``), with the ids and keys that were not."""

    def __init__(self, items, missing_ids=(), missing_keys=()):
        super().__init__(items)
        self.missing_ids, self.missing_keys = list(missing_ids), list(missing_keys)


class Count(int):
    """How many items a call deleted or updated, with the ids and keys that were not stored
    (reported, not an error: sending the same delete again succeeds)."""

    missing_ids: list
    missing_keys: list

    def __new__(cls, n: int, missing_ids=(), missing_keys=()):
        out = super().__new__(cls, n)
        out.missing_ids, out.missing_keys = list(missing_ids), list(missing_keys)
        return out


class Added(list):
    """The ids of an add, one per item in order (None where refused), with what happened:
    ``added`` (new), ``replaced``, ``unchanged``, ``stored`` (all three) and ``refused``
    counts, and ``refusals`` (position, status name, reason) for the refused items."""

    def __init__(self, response: pb.AddResponse):
        results = sorted(response.results, key=lambda r: r.index)
        super().__init__(r.id if r.ok else None for r in results)
        self.added, self.replaced = response.added, response.replaced
        self.unchanged, self.stored = response.unchanged, response.stored
        self.refused = response.failed
        self.refusals = [(r.index, r.error_code, r.error) for r in results if not r.ok]

    def __repr__(self) -> str:
        return (f"Added({list.__repr__(self)}, added={self.added}, replaced={self.replaced}, "
                f"unchanged={self.unchanged}, refused={self.refused})")


def merged(response: pb.AddResponse, sent: list[int],
           refused: dict[int, tuple[str, str]], keys: list[str]) -> pb.AddResponse:
    """The server's answer for the items sent, with the items the client refused itself
    (values it cannot send, files it cannot read), numbered as the caller gave them."""
    if not refused:
        return response
    out = pb.AddResponse(added=response.added, replaced=response.replaced,
                         unchanged=response.unchanged, stored=response.stored,
                         failed=response.failed + len(refused))
    for r in response.results:
        copy = pb.AddResult()
        copy.CopyFrom(r)
        copy.index = sent[r.index]
        out.results.append(copy)
    for position, (code, why) in refused.items():
        out.results.append(pb.AddResult(index=position, ok=False, key=keys[position],
                                        error_code=code, error=why))
    return out


def collection(info: pb.CollectionInfo) -> dict:
    return {"name": info.name, "model": info.model, "model_fingerprint": info.model_fingerprint,
            "index_kind": info.index_kind, "bits": info.bits, "images": info.images,
            "texts": info.texts, "size_bytes": info.size_bytes,
            "index_options": json.loads(info.index_options or "{}"), "created": info.created}


def stats(s: pb.Stats) -> dict:
    return {"images": s.images, "texts": s.texts, "index_kind": s.index_kind, "bits": s.bits,
            "model": s.model, "gpu": s.gpu, "uptime_s": s.uptime_s,
            "index_params": json.loads(s.index_params or "{}"), "version": s.version,
            "collection": s.collection or "default"}


def encoded(r: pb.EncodeResponse, embeddings: bool) -> Encoded:
    width = r.bits // 8

    def codes(rows):
        return np.frombuffer(b"".join(e.code for e in rows), np.uint8).reshape(len(rows), width)

    def floats(rows):
        return np.array([list(e.embedding) for e in rows], np.float32) if embeddings else None

    return Encoded(r.bits, codes(r.texts), codes(r.images), floats(r.texts), floats(r.images))
