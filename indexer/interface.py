"""The index contract: the ``Index`` base both kinds implement (FAISS over SQLite, Milvus), the
result types, and the argument checks and re-ranking they share."""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from crossbit.indexer.embeddings import unit_rows
from crossbit.indexer.filters import Filter
from crossbit.indexer.items import Item, StoreWrite, repeated_items

MAX_K = 100_000  # the most results one query may ask for, whatever the kind


class Results(NamedTuple):
    """Search results, one row per query, padded with id -1."""

    ids: np.ndarray  # int64 (n, k)
    distances: np.ndarray  # int32 (n, k) Hamming distances


class Reranked(NamedTuple):
    ids: np.ndarray  # int64 (n, k)
    distances: np.ndarray  # int32 (n, k)
    scores: np.ndarray  # float32 (n, k) cosine similarity of float embeddings


class ModelMismatch(ValueError):
    """The store holds codes of another model: searching them with this one returns garbage."""


class ItemLists(NamedTuple):
    """The checked arguments of an add: one entry per code in every list."""

    codes: np.ndarray
    ids: list | None  # None: assign every id
    keys: list
    metadata_json: list[str]  # each item's metadata as JSON, serialised once here ("{}" for none)
    embeddings: np.ndarray | None
    thumbnails: list | None
    previews: list | None


def check_codes(codes, bits: int, name: str = "codes") -> np.ndarray:
    """Validate packed codes: uint8, 2-D, bits/8 columns. Returns a contiguous array."""
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{name} must be a numpy uint8 array, got {type(codes).__name__}")
    if codes.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != bits // 8:
        raise ValueError(f"{name} must have shape (n, {bits // 8}) for {bits}-bit codes, "
                         f"got {codes.shape}")
    return np.ascontiguousarray(codes)


def check_ids(ids, n: int, name: str = "ids") -> np.ndarray:
    """Distinct non-negative int64 ids, ``n`` of them."""
    if not isinstance(ids, np.ndarray):
        ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers (int64), got {ids.dtype}")
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"{name} must be 1-D with {n} entries, got shape {ids.shape}")
    if len(ids) and (ids.min() < 0 or ids.max() > np.iinfo(np.int64).max):
        raise ValueError(f"{name} must be non-negative int64 values")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{name} has duplicates")
    return np.ascontiguousarray(ids, dtype=np.int64)


def check_embeddings(embeddings, n: int) -> np.ndarray:
    """Embeddings as float32 (n, d), or a ValueError."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != n:
        raise ValueError(f"embeddings must have shape ({n}, d), got {embeddings.shape}")
    return embeddings


def check_radius(radius, bits: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or \
            not 0 <= radius <= bits:
        raise ValueError(f"radius must be an int between 0 and {bits}, got {radius!r}")
    return int(radius)


def per_code(values, n: int, name: str, types) -> list:
    """A list of one entry per code (None entries where ``values`` is None), each of ``types``."""
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes, dict)):
        raise TypeError(f"{name} must be a list with one entry per code, not a single value")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} codes (one entry per code)")
    for i, v in enumerate(values):
        if not isinstance(v, types):
            raise TypeError(f"{name}[{i}] has type {type(v).__name__}")
    return values


def check_items(codes, bits: int, ids=None, keys=None, metadata=None, embeddings=None,
                thumbnails=None, previews=None) -> ItemLists:
    """Every argument of an add checked the one way both kinds share (TypeError or
    ValueError for the whole call; per-item refusals are the store's)."""
    codes = check_codes(codes, bits)
    n = len(codes)
    if ids is not None:
        ids = per_code(ids, n, "ids", (int, np.integer, type(None)))
        for i, v in enumerate(ids):
            if v is not None and not 0 <= int(v) <= np.iinfo(np.int64).max:
                raise ValueError(f"ids[{i}] must be a non-negative int64, got {v}")
        ids = None if all(v is None for v in ids) else [None if v is None else int(v) for v in ids]
    keys = per_code(keys, n, "keys", (str, type(None)))
    metadata = per_code(metadata, n, "metadata", (dict, type(None)))
    if thumbnails is not None:
        thumbnails = per_code(thumbnails, n, "thumbnails", (bytes, type(None)))
    if previews is not None:
        previews = per_code(previews, n, "previews", (bytes, type(None)))
    if embeddings is not None:
        embeddings = check_embeddings(embeddings, n)
    try:
        metadata_json = [json.dumps(m or {}) for m in metadata]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None
    return ItemLists(codes, ids, keys, metadata_json, embeddings, thumbnails, previews)


def vectors_from(stored: dict[int, np.ndarray], ids: np.ndarray,
                 dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors of shape ids.shape + (dim,), found mask) from an id -> vector dict.

    Vectors of another width count as missing.
    """
    vectors = np.zeros(ids.shape + (dim,), np.float32)
    found = np.zeros(ids.shape, bool)
    for index, item in np.ndenumerate(ids):
        vec = stored.get(int(item))
        if vec is not None and len(vec) == dim:
            vectors[index] = vec
            found[index] = True
    return unit_rows(vectors), found


def rerank(first: Results, embeddings: np.ndarray, vectors: np.ndarray, found: np.ndarray,
           k: int, bits: int) -> Reranked:
    """Re-order each query's Hamming shortlist by cosine of the float embeddings.

    ``vectors`` (n, shortlist, d) holds the shortlist's unit vectors and ``found`` says
    which exist. Items without one (or of another width) score -inf and keep their
    Hamming order after the others; the result keeps the ``k`` best, padded with id -1.
    """
    embeddings = check_embeddings(embeddings, len(first.ids))
    query = unit_rows(embeddings)
    valid = first.ids >= 0
    if vectors.shape[-1] == query.shape[1]:
        score = np.einsum("nsd,nd->ns", vectors, query, optimize=False).astype(np.float32)
        score[~(found & valid)] = -np.inf
    else:
        score = np.full(first.ids.shape, -np.inf, np.float32)
    order = np.lexsort((first.distances, -score, ~valid), axis=-1)[:, :k]
    ids = np.take_along_axis(first.ids, order, axis=1)
    keep = np.take_along_axis(valid, order, axis=1)
    out_ids = np.full((len(ids), k), -1, np.int64)
    out_d = np.full((len(ids), k), bits + 1, np.int32)
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    width = order.shape[1]
    out_ids[:, :width] = np.where(keep, ids, -1)
    out_d[:, :width] = np.where(keep, np.take_along_axis(first.distances, order, axis=1), bits + 1)
    out_s[:, :width] = np.where(keep, np.take_along_axis(score, order, axis=1), -np.inf)
    return Reranked(out_ids, out_d, out_s)


class Index(abc.ABC):
    """What the service core calls on an index, whatever its kind.

    Writes: :meth:`add_items` (per-item outcomes), :meth:`add` (all or nothing),
    :meth:`remove`, :meth:`update_metadata`. Reads: :meth:`search`, :meth:`search_rerank`,
    :meth:`range_search` (each with an optional :class:`~crossbit.indexer.filters.Filter`),
    :meth:`count`, :meth:`select` and :meth:`scroll` by filter, and the stored items' keys,
    metadata, thumbnails, codes and embeddings.
    """

    kind: str
    requested_kind: str
    bits: int
    directory: Path

    # -- writes -------------------------------------------------------------------------------
    def add(self, codes: np.ndarray, ids: Sequence[int] | np.ndarray | None = None,
            keys: Sequence[str | None] | None = None, metadata: Sequence[dict] | None = None,
            embeddings: np.ndarray | None = None,
            thumbnails: Sequence[bytes | None] | None = None) -> np.ndarray:
        """Add (or, for a known key or id, replace) items; returns their int64 ids.

        Raises:
            ValueError: a key or id given twice in the call, or an item the index refuses
                (a key or id repeated in the call is refused before anything is written).
        """
        if ids is not None:
            ids = check_ids(ids, len(codes))
        repeats = repeated_items(per_code(keys, len(codes), "keys", (str, type(None))), ids)
        if repeats:
            n, why = next(iter(repeats.items()))
            raise ValueError(f"item {n}: {why}")
        write = self.add_items(codes, ids, keys, metadata, embeddings, thumbnails)
        if write.refused:
            n, why = next(iter(write.refused.items()))
            raise ValueError(f"item {n}: {why}")
        return write.ids

    @abc.abstractmethod
    def add_items(self, codes: np.ndarray, ids=None, keys=None, metadata=None, embeddings=None,
                  thumbnails=None, positions=None, previews=None) -> StoreWrite:
        """Per item: an item with a stored key replaces it (keeping its id unless one is
        given), one with a stored id replaces that item; repeats of a key or id within the
        call are refused alone (``positions`` numbers the items in those messages)."""

    @abc.abstractmethod
    def remove(self, ids: Sequence[int]) -> int:
        """Remove items by id; KeyError naming unknown ids (then nothing is removed)."""

    @abc.abstractmethod
    def ids_for_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """Map keys to ids; unknown keys are absent from the answer."""

    # -- searches -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def max_k(self) -> int:
        """The most results one query may ask of this index."""

    def check_k(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        if not 1 <= k <= self.max_k:
            raise ValueError(f"k must be between 1 and {self.max_k} for a {self.kind} index, "
                             f"got {k}")
        return int(k)

    @abc.abstractmethod
    def search(self, codes: np.ndarray, k: int, nprobe: int | None = None,
               filter: Filter | None = None) -> Results:
        """The k nearest items of each query code by Hamming distance, among the items that
        match ``filter`` (all when None): never fewer than min(k, matches) hits (ids padded
        with -1, distance ``bits + 1``, past them). One filter evaluation serves every query."""

    def search_rerank(self, codes: np.ndarray, embeddings: np.ndarray, k: int,
                      shortlist: int = 100, nprobe: int | None = None,
                      filter: Filter | None = None) -> Reranked:
        """Hamming shortlist of ``shortlist`` matching items, re-ordered by cosine of the float
        embeddings; items stored without one keep their Hamming order after the others."""
        k = self.check_k(k)
        embeddings = check_embeddings(embeddings, len(codes))
        first = self.search(codes, min(max(k, shortlist), self.max_k), nprobe, filter=filter)
        vectors, found = self.shortlist_vectors(first.ids, embeddings.shape[1])
        return rerank(first, embeddings, vectors, found, k, self.bits)

    def shortlist_vectors(self, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The unit embeddings of a shortlist's ids (see :func:`vectors_from`)."""
        return vectors_from(self.embeddings(np.unique(ids[ids >= 0])), ids, dim)

    @abc.abstractmethod
    def range_search(self, codes: np.ndarray, radius: int,
                     filter: Filter | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (ids, distances) of the matching items within Hamming ``radius``."""

    # -- filters --------------------------------------------------------------------------------
    @abc.abstractmethod
    def count(self, filter: Filter | None = None) -> int:
        """How many items match ``filter`` (all items when None)."""

    @abc.abstractmethod
    def select(self, filter: Filter, limit: int | None = None) -> np.ndarray:
        """The int64 ids of the matching items, ascending (the first ``limit`` of them)."""

    @abc.abstractmethod
    def scroll(self, after: int | None, limit: int, filter: Filter | None = None) -> list[Item]:
        """Matching items with id > ``after`` (all when None), ascending id, at most ``limit``:
        an item that exists for the whole scroll is seen exactly once."""

    @abc.abstractmethod
    def update_metadata(self, ids: Sequence[int], set_fields: dict | None = None,
                        remove_fields: Sequence[str] = (), replace: bool = False) -> int:
        """Merge ``set_fields`` into the items' metadata and drop ``remove_fields`` (or replace
        it with ``set_fields``), codes untouched; unknown ids are skipped. Returns how many
        items changed."""

    # -- stored items -------------------------------------------------------------------------
    @abc.abstractmethod
    def items(self, ids: Sequence[int], max_bytes: int | None = None) -> dict[int, Item]:
        """Key, metadata and time added of the given ids (unknown ids absent); StoreLimit
        past ``max_bytes`` of keys and metadata."""

    @abc.abstractmethod
    def thumbnail(self, item_id: int) -> bytes | None: ...

    @abc.abstractmethod
    def preview(self, item_id: int) -> bytes | None: ...

    @abc.abstractmethod
    def codes(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(the ids found, their codes)."""

    @abc.abstractmethod
    def embeddings(self, ids: Sequence[int]) -> dict[int, np.ndarray]: ...

    @abc.abstractmethod
    def page(self, offset: int, limit: int, newest_first: bool = False) -> list[Item]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def stats(self) -> dict: ...

    # -- life ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def snapshot(self) -> bool:
        """Write what makes the next open fast, if the kind has such a thing; True if written."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
