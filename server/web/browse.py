"""Browsing for the web page: one item, its thumbnail and preview, pages of items, "more like this",
in any collection."""

from __future__ import annotations

import time

from crossbit.server.core import RetrievalCore
from crossbit.server.core.exceptions import NotFoundError
from crossbit.server.core.filtering import parse_filter
from crossbit.server.core.requests import Query, SearchResult
from crossbit.server.core.searching import page_hits


class Browser:
    """Reads over the core's indexes that only the web page makes (no gRPC call needs them)."""

    def __init__(self, core: RetrievalCore):
        self.core = core

    def like(self, item_id: int, modality: str = "image", top_k: int = 0,
             target: str | None = None, timeout: float | None = None,
             collection: str = "default", filter_expr: str = "", offset: int = 0,
             min_score: float | None = None) -> SearchResult:
        """"More like this": search with a stored item's own code (and float embedding), paged
        by ``offset`` and cut at ``min_score`` as a search is."""
        with self.core.registry.get(collection).use() as coll:
            index = self.core.index_for(modality, coll)
            found, codes = index.codes([int(item_id)])
            if not len(found):
                raise NotFoundError(f"unknown {modality} id {item_id}")
            query = Query(code=codes[0].tobytes(), top_k=top_k, modality=target or modality,
                          offset=offset, min_score=min_score)
            self.core.checks.query(query, coll.bits)
            k = (query.top_k or self.core.config.default_top_k) + offset
            embedding = index.embeddings([int(item_id)]).get(int(item_id))
            start = time.perf_counter()
            rerank = self.core.config.rerank and embedding is not None
            rows = self.core.search_group(query.modality, codes[:1], k, None, None, rerank,
                                          [embedding], coll, parse_filter(filter_expr))
            rows[:] = [page_hits(r, offset, min_score, coll.bits) for r in rows]
            hits = self.core.hits([query.modality], rows, None, [coll])[0]
        return SearchResult(hits, coll.bits, 0.0, 1000 * (time.perf_counter() - start), rerank)

    def item(self, item_id: int, modality: str = "image", collection: str = "default") -> dict:
        """Key, metadata and time added of one item."""
        found = self.core.index_for(modality, collection).items([int(item_id)]).get(int(item_id))
        if found is None:
            raise NotFoundError(f"unknown {modality} id {item_id}")
        return {"id": found.id, "key": found.key or "", "metadata": found.metadata,
                "added": found.added, "modality": modality, "collection": collection}

    def thumbnail(self, item_id: int, modality: str = "image",
                  collection: str = "default") -> bytes | None:
        try:
            return self.core.index_for(modality, collection).thumbnail(int(item_id))
        except KeyError:
            raise NotFoundError(f"unknown {modality} id {item_id}") from None

    def preview(self, item_id: int, modality: str = "image",
                collection: str = "default") -> bytes | None:
        try:
            return self.core.index_for(modality, collection).preview(int(item_id))
        except KeyError:
            raise NotFoundError(f"unknown {modality} id {item_id}") from None

    def page(self, offset: int, limit: int, modality: str = "image",
             newest_first: bool = False, collection: str = "default") -> list[dict]:
        """Items in id order (or newest first), for browsing."""
        if offset < 0 or not 1 <= limit <= self.core.config.max_top_k:
            raise ValueError(f"offset must be >= 0 and limit between 1 and {self.core.config.max_top_k}")
        return [{"id": i.id, "key": i.key or "", "metadata": i.metadata, "modality": modality}
                for i in self.core.index_for(modality, collection).page(offset, limit,
                                                                        newest_first)]
