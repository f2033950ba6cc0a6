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
    code: bytes | None = None  # import: an image's stored code, used instead of its pixels
    embedding: list | None = None  # and its float embedding


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
    filter: str = ""  # only items this expression selects (empty: all)
    collection: str = ""  # empty: default
    offset: int = 0  # skip this many hits (paging)
    min_score: float | None = None  # only hits scoring at least this


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


@dataclass
class StoredItem:
    """One item read back (Get, Scroll): key, metadata and, on request, its code and embedding."""

    id: int
    key: str
    modality: str
    metadata: dict
    added: float
    code: bytes | None = None
    embedding: list | None = None


@dataclass
class Missing:
    """What a call by ids and keys did not find (not an error for Delete, Get, UpdateMetadata)."""

    ids: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
