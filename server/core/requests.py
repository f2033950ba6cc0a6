"""What goes into and comes out of the service core: items to add, queries, outcomes and hits."""

from __future__ import annotations

from dataclasses import dataclass, field

MODALITIES = ("image", "text")


@dataclass
class NewItem:
    """One item to add: image bytes or a text, with an optional key, id and metadata."""

    payload: bytes | str
    key: str = ""
    id: int | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class AddOutcome:
    index: int
    ok: bool
    id: int = -1
    key: str = ""
    error: str = ""
    code: str = ""  # status name of the error (INVALID_ARGUMENT, RESOURCE_EXHAUSTED)
    outcome: str = ""  # when ok: added, replaced or unchanged


@dataclass
class Query:
    text: str | None = None
    image: bytes | None = None
    code: bytes | None = None
    top_k: int = 0
    radius: int | None = None
    modality: str = "image"
    rerank: bool | None = None
    nprobe: int = 0
    fresh: bool = False  # see every write acknowledged before the call, through any server


@dataclass
class Hit:
    id: int
    key: str
    distance: int
    score: float
    metadata: dict
    modality: str


@dataclass
class SearchResult:
    hits: list[Hit]
    bits: int
    encode_ms: float = 0.0
    search_ms: float = 0.0
    reranked: bool = False
