"""The core's searches: queries of any collection encoded in shared batches, grouped into one index
call per compatible group (filter included), hits read within the response budget, pages and
score cut-offs (mixed into ``RetrievalCore``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from crossbit.indexer.call_context import within
from crossbit.indexer.items import StoreLimit
from crossbit.server.core.calls import ensure_scope
from crossbit.server.core.collections import Collection
from crossbit.server.core.exceptions import LimitError, NotFoundError
from crossbit.server.core.filtering import parse_filter
from crossbit.server.core.requests import Hit, Query, SearchResult

HIT_OVERHEAD = 48  # protobuf bytes of a hit besides its key and metadata (id, distance, score...)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline exceeded")
    return left


def _numbered(exc: Exception, n: int) -> Exception:
    """The same error with the query's position in front (a plain ValueError or NotFoundError
    when its own type takes other arguments, a FilterError's position say)."""
    message = f"queries[{n}]: {exc}"
    try:
        return type(exc)(message)
    except TypeError:
        return NotFoundError(message) if isinstance(exc, KeyError) else ValueError(message)


class SearchCalls:
    """Search, over the core's ``registry``, ``config``, ``checks`` and ``search_batcher``."""

    def search(self, query: Query, timeout: float | None = None) -> SearchResult:
        return self.search_many([query], timeout)[0]

    def search_many(self, queries: Sequence[Query], timeout: float | None = None) -> list[SearchResult]:
        """Answer queries (each in its own collection, with its own filter); codes are encoded
        in shared batches and searched in one index call per group of compatible queries."""
        with ensure_scope(timeout):
            return self._search_many(queries, timeout)

    def _search_many(self, queries, timeout) -> list[SearchResult]:
        self.checks.batch(len(queries), "queries")
        deadline = _deadline(timeout)
        colls, filters = [], []
        for n, q in enumerate(queries):
            try:
                coll = self.registry.get(q.collection)
                self.checks.query(q, coll.bits)
                if q.text is not None:
                    self.checks.text(q.text)
                filters.append(parse_filter(q.filter))
            except (ValueError, KeyError) as exc:
                if len(queries) == 1:
                    raise
                raise _numbered(exc, n) from None
            colls.append(coll)
        start = time.perf_counter()
        futures = {}
        budget = self.checks.budget([q.image for q in queries], _remaining(deadline))
        for n, q in enumerate(queries):
            if q.text is not None:
                futures[n] = colls[n].encoders.text.submit(q.text)
            elif q.image is not None:
                futures[n] = colls[n].encoders.image.submit(self.checks.decode(q.image, budget))
        codes: list[np.ndarray] = []
        embeddings: dict[int, np.ndarray] = {}
        for n, q in enumerate(queries):
            if n in futures:
                code, emb = futures[n].result(timeout=_remaining(deadline))
                codes.append(code)
                embeddings[n] = emb
            else:
                codes.append(np.frombuffer(q.code, dtype=np.uint8))
        encode_ms = 1000 * (time.perf_counter() - start)
        _remaining(deadline)
        searches = []
        for n, q in enumerate(queries):
            rerank = bool((self.config.rerank if q.rerank is None else q.rerank)
                          and n in embeddings)
            k = (q.top_k or self.config.default_top_k) + q.offset
            key = (colls[n].name, q.modality, k, q.nprobe or None, q.radius, rerank,
                   bool(q.fresh), (q.filter or "").strip())
            searches.append((self.search_batcher.submit((key, codes[n], embeddings.get(n),
                                                         deadline, colls[n], filters[n])),
                             rerank))
        found = [future.result(timeout=_remaining(deadline)) for future, _ in searches]
        for (rows, _, _), q, coll in zip(found, queries, colls):
            rows[:] = [page_hits(r, q.offset, q.min_score, coll.bits) for r in rows]
        with within(deadline, fresh=any(q.fresh for q in queries)):
            hits = self.hits([q.modality for q in queries], [rows[0] for rows, _, _ in found],
                             [items for _, _, items in found], colls)
        return [SearchResult(h, c.bits, encode_ms if n in futures else 0.0, ms, rerank)
                for n, (h, c, (_, ms, _), (_, rerank)) in enumerate(zip(hits, colls, found,
                                                                        searches))]

    def _search_batch(self, items: list) -> list:
        """Search a batch of encoded queries: one index call per group of compatible ones
        (same collection, modality, k, filter...); the group's filter is evaluated once.

        Each query's answer is ([(ids, distances, scores or None)], the group's time, the
        group's stored items), the items read in one go when they fit one response's budget
        (else None: each caller then reads its own, within its own budget).
        """
        groups: dict[tuple, list[int]] = {}
        for n, item in enumerate(items):
            groups.setdefault(item[0], []).append(n)
        out: list = [None] * len(items)
        for (_, modality, k, nprobe, radius, rerank, fresh, _), members in groups.items():
            t0 = time.perf_counter()
            coll, filter_ = items[members[0]][4], items[members[0]][5]
            codes = np.stack([items[n][1] for n in members])
            try:
                deadlines = [items[n][3] for n in members]  # the most patient caller's
                with within(None if None in deadlines else max(deadlines), fresh=fresh), \
                        coll.use():
                    rows = self.search_group(modality, codes, k, nprobe, radius, rerank,
                                             [items[n][2] for n in members], coll, filter_)
                    wanted = sorted({int(i) for ids, _, _ in rows for i in ids if i >= 0})
                    try:
                        stored = coll.indexes[modality].items(
                            wanted, max_bytes=self.config.max_response_bytes)
                    except StoreLimit:
                        stored = None
            except Exception as exc:  # this group's callers hear of it; other groups go on
                for n in members:
                    out[n] = exc
                continue
            ms = 1000 * (time.perf_counter() - t0)
            for n, r in zip(members, rows):
                out[n] = ([r], ms, stored)
        return out

    def search_group(self, modality, codes, k, nprobe, radius, rerank, embeddings,
                     collection: Collection | str | None = None, filter_=None) -> list:
        """Per query (ids, distances, scores or None) from one index call."""
        index = self.index_for(modality, collection)
        extra = {} if filter_ is None else {"filter": filter_}
        if radius is not None:
            found = index.range_search(codes, radius, **extra)
            return [(ids[:k], dist[:k], None) for ids, dist in found]
        if rerank:
            res = index.search_rerank(codes, np.stack(embeddings), k,
                                      shortlist=max(k, self.config.rerank_shortlist),
                                      nprobe=nprobe, **extra)
            return list(zip(res.ids, res.distances, res.scores))
        res = index.search(codes, k, nprobe=nprobe, **extra)
        return [(i, d, None) for i, d in zip(res.ids, res.distances)]

    def hits(self, modalities: Sequence[str], rows: Sequence[tuple],
             prefetched: Sequence[dict | None] | None = None,
             collections: Sequence[Collection] | None = None) -> list[list[Hit]]:
        """Hits with their stored keys and metadata, within the response budget.

        The budget (``max_response_bytes``) bounds the keys and metadata the answer carries,
        counted while they are read, so a small request cannot make a huge answer.
        ``prefetched``: per query, the items its search group already read (or None).
        """
        limit = self.config.max_response_bytes
        prefetched = prefetched or [None] * len(rows)
        collections = collections or [self.default] * len(rows)
        wanted: dict[tuple, set[int]] = {}
        for modality, (ids, _, _), got, coll in zip(modalities, rows, prefetched, collections):
            if got is None:
                wanted.setdefault((coll.name, modality), set()).update(int(i) for i in ids
                                                                       if i >= 0)
        by_name = {c.name: c for c in collections}
        try:
            stored = {(c, m): by_name[c].indexes[m].items(sorted(w), max_bytes=limit)
                      for (c, m), w in wanted.items()}
        except StoreLimit:
            raise LimitError(self._too_large(limit, sum(map(len, wanted.values())))) from None
        out, total = [], 0
        for modality, (ids, dist, scores), got, coll in zip(modalities, rows, prefetched,
                                                            collections):
            bits = float(coll.bits)
            items = got if got is not None else stored[(coll.name, modality)]
            hits = []
            for j, (item_id, d) in enumerate(zip(ids.tolist(), dist.tolist())):
                item = items.get(item_id) if item_id >= 0 else None
                if item is None:  # padding, or deleted since the search
                    continue
                score = float(scores[j]) if scores is not None and np.isfinite(scores[j]) \
                    else 1.0 - d / bits
                total += item.size + HIT_OVERHEAD
                hits.append(Hit(item_id, item.key or "", d, score, item.metadata, modality))
            out.append(hits)
        if total > limit:
            raise LimitError(self._too_large(limit, sum(map(len, out))))
        return out

    @staticmethod
    def _too_large(limit: int, hits: int) -> str:
        return (f"the answer ({hits} hits with their keys and metadata) would be over "
                f"{limit / 1e6:.1f} MB, the limit per response: ask for fewer hits (top_k) "
                "or fewer queries per call")


def page_hits(row: tuple, offset: int, min_score: float | None, bits: int) -> tuple:
    """One query's hits from ``offset`` on, without those scoring under ``min_score``."""
    ids, dist, scores = row
    ids, dist = ids[offset:], dist[offset:]
    scores = None if scores is None else scores[offset:]
    if min_score is not None:  # the score a hit shows (the cosine, else 1 - distance / bits)
        score = 1.0 - dist / float(bits)
        if scores is not None:
            score = np.where(np.isfinite(scores), scores, score)
        keep = (ids < 0) | (score >= min_score)
        ids, dist = ids[keep], dist[keep]
        scores = None if scores is None else scores[keep]
    return ids, dist, scores
