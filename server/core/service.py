"""The service core: encode, add and search in any collection (no gRPC here); reading back, deleting,
counting and the collections themselves are in ``catalog``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from crossbit.indexer.call_context import within
from crossbit.indexer.items import StoreLimit
from crossbit.server.config import ServerConfig
from crossbit.server.core.batching import MicroBatcher
from crossbit.server.core.calls import ensure_scope
from crossbit.server.core.catalog import CatalogCalls
from crossbit.server.core.collections import DEFAULT, Collection, CollectionRecord, Registry
from crossbit.server.core.exceptions import LimitError, UnavailableError
from crossbit.server.core.filtering import parse_filter
from crossbit.server.core.images import make_thumbnail
from crossbit.server.core.models import ModelPool
from crossbit.server.core.requests import (
    MODALITIES,
    AddOutcome,
    Hit,
    NewItem,
    Query,
    SearchResult,
)
from crossbit.server.core.validation import RequestChecks

log = logging.getLogger(__name__)

SEARCH_BATCH = 256  # most encoded queries searched together

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


class RetrievalCore(CatalogCalls):
    """Everything the gRPC servicer and the web API call, for any collection. Raises ValueError
    (bad input), LimitError (over a limit), KeyError/NotFoundError, TimeoutError, StoreError.

    Args:
        registry: the server's collections (opened); see :meth:`with_indexes` for one
            collection over indexes opened by the caller.
        config: the server's settings.
        metrics: the Prometheus metrics, or None.
    """

    def __init__(self, registry: Registry, config: ServerConfig, metrics=None):
        self.registry = registry
        self.config = config
        self.metrics = metrics
        self.started = time.time()
        self.closing = False
        self.checks = RequestChecks(config)
        # encoded queries of concurrent requests share index calls: whatever is queued when
        # the worker is free goes in one batch (no waiting: a lone query goes at once)
        self.search_batcher = MicroBatcher(self._search_batch, SEARCH_BATCH, 0.0, "search",
                                           observer(metrics)("search"))

    @classmethod
    def with_indexes(cls, model, indexes: dict, config: ServerConfig, metrics=None,
                     model_name: str = DEFAULT) -> RetrievalCore:
        """A core with one (default) collection over a loaded model and opened indexes."""
        models = ModelPool(config, None, observer(metrics), preloaded={model_name: model})
        registry = Registry(config, models)
        encoders = models.get(model_name)
        registry.adopt(Collection(CollectionRecord(DEFAULT, encoders.spec, config.index),
                                  encoders, indexes, registry.folder(DEFAULT)))
        return cls(registry, config, metrics)

    # the default collection's parts, by their old names (tests, benchmarks, the demo)
    @property
    def default(self) -> Collection:
        return self.registry.get(DEFAULT)

    @property
    def indexes(self) -> dict:
        return self.default.indexes

    @property
    def model(self):
        return self.default.encoders.model

    @property
    def bits(self) -> int:
        return self.default.bits

    @property
    def text_batcher(self) -> MicroBatcher:
        return self.default.encoders.text

    @property
    def image_batcher(self) -> MicroBatcher:
        return self.default.encoders.image

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], images: Sequence[bytes],
               timeout: float | None = None, collection: str = DEFAULT) -> tuple[list, list]:
        """Codes and embeddings of texts and images with a collection's model, in order; any
        bad input fails the call."""
        with ensure_scope(timeout), self.registry.get(collection).use() as coll:
            return self._encode(texts, images, timeout, coll)

    def _encode(self, texts, images, timeout, coll: Collection):
        self.checks.batch(len(texts) + len(images), "texts and images")
        deadline = _deadline(timeout)
        texts = [self.checks.text(t) for t in texts]
        decoded, budget = [], self.checks.budget(images, _remaining(deadline))
        for i, data in enumerate(images):
            try:
                decoded.append(self.checks.decode(data, budget))
            except ValueError as exc:
                raise type(exc)(f"images[{i}]: {exc}") from None
        text_out = coll.encoders.text(texts, _remaining(deadline)) if texts else []
        image_out = coll.encoders.image(decoded, _remaining(deadline)) if decoded else []
        return text_out, image_out

    # -- adding --------------------------------------------------------------------------------
    def add(self, modality: str, items: Sequence[NewItem | BaseException],
            timeout: float | None = None, first: int = 0,
            seen: dict | None = None, collection: str = DEFAULT) -> list[AddOutcome]:
        """Add images or texts; a bad item fails alone, with its reason in its outcome.

        Within one call the first item with a given key or id wins: a later item that
        repeats it is refused (INVALID_ARGUMENT), so one call never stores an id twice.
        Every accepted item is written in one store transaction: all of them or none.

        Args:
            items: the items; an exception in an item's place refuses that item with it
                (a stream message that did not parse).
            first, seen: for a call that arrives in parts (a stream): the position of this
                part's first item, and the keys and ids its earlier parts took.
        """
        with ensure_scope(timeout), self.registry.get(collection).use() as coll:
            return self._add(modality, items, timeout, first, seen, coll)

    def _add(self, modality, items, timeout, first, seen, coll: Collection) -> list[AddOutcome]:
        if self.closing:
            raise UnavailableError("the server is shutting down")
        index = self.index_for(modality, coll)
        self.checks.batch(len(items), "items")
        deadline = _deadline(timeout)
        outcomes = [AddOutcome(first + i, False, key=getattr(item, "key", ""))
                    for i, item in enumerate(items)]
        prepared, thumbs, previews, futures = [], [], [], []
        seen = {} if seen is None else seen  # ("key", k) or ("id", i) -> position in the call
        budget = self.checks.budget([getattr(item, "payload", None) for item in items],
                                    _remaining(deadline))  # images' pixels (texts are skipped)
        for i, item in enumerate(items):
            try:
                if isinstance(item, BaseException):
                    raise ValueError(str(item))
                self.checks.item(item)
                for what in (("key", item.key) if item.key else None,
                             ("id", item.id) if item.id is not None else None):
                    if what in seen:  # taken by an earlier part of this call (a stream)
                        raise ValueError(f"{what[0]} {what[1]!r} repeats item {seen[what]} of "
                                         "this call")
                if modality == "image" and item.code is not None:  # an import: stored as given
                    futures.append(_given(item, coll.bits))
                    thumbs.append(None)
                    previews.append(None)
                elif modality == "image":
                    image = self.checks.decode(item.payload, budget)
                    thumbs.append(make_thumbnail(image, self.config.thumbnail_size)
                                  if self.config.thumbnails else None)
                    previews.append(self._preview(image))
                    futures.append(coll.encoders.image.submit(image))
                else:
                    text = self.checks.text(item.payload)
                    thumbs.append(None)
                    previews.append(None)
                    futures.append(coll.encoders.text.submit(text))
                prepared.append(i)
            except (ValueError, TypeError) as exc:
                outcomes[i].error = str(exc)
                outcomes[i].code = "RESOURCE_EXHAUSTED" if isinstance(exc, LimitError) \
                    else "INVALID_ARGUMENT"
        encoded = [f.result(timeout=_remaining(deadline)) for f in futures]
        if not prepared:
            return outcomes
        metadata = []
        for i in prepared:
            meta = dict(items[i].metadata)
            if modality == "text":  # the item's own text wins over metadata of that name
                meta["text"] = items[i].payload
            metadata.append(meta)
        _remaining(deadline)
        with within(deadline):
            write = index.add_items(np.stack([e[0] for e in encoded]),
                                    ids=[items[i].id for i in prepared],
                                    keys=[items[i].key or None for i in prepared],
                                    metadata=metadata,
                                    embeddings=np.stack([e[1] for e in encoded]),
                                    thumbnails=thumbs, positions=[first + i for i in prepared],
                                    previews=previews)
        for n, i in enumerate(prepared):
            if n in write.refused:
                outcomes[i].error, outcomes[i].code = write.refused[n], "INVALID_ARGUMENT"
                continue
            outcomes[i].ok, outcomes[i].id = True, int(write.ids[n])
            outcomes[i].outcome = write.outcomes[n]
            if items[i].key:
                seen[("key", items[i].key)] = first + i
            seen[("id", int(write.ids[n]))] = first + i
        return outcomes

    def _preview(self, image) -> bytes | None:
        """The larger view kept for the web page: none when the thumbnail is as large."""
        size = self.config.preview_size
        if not size or max(image.size) <= self.config.thumbnail_size:
            return None
        return make_thumbnail(image, size, quality=85)

    # -- searching -----------------------------------------------------------------------------
    def index_for(self, modality: str, collection: Collection | str | None = None):
        """A collection's index of one modality (the default collection's when none)."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if not isinstance(collection, Collection):
            collection = self.registry.get(collection)
        return collection.indexes[modality]

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
                raise type(exc)(f"queries[{n}]: {exc}" if len(queries) > 1 else str(exc)) from None
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
            rows[:] = [_page(r, q.offset, q.min_score, coll.bits) for r in rows]
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

    def close(self) -> None:
        """Stop the batchers (after what is queued) and close every collection (snapshot)."""
        self.closing = True
        self.search_batcher.close()
        self.registry.models.close()
        self.registry.close()


def _given(item: NewItem, bits: int) -> Future:
    """An imported item's code and embedding, as the encoders' futures give theirs."""
    if len(item.code) != bits // 8:
        raise ValueError(f"code is {len(item.code)} bytes; this collection's model makes "
                         f"{bits}-bit codes ({bits // 8} bytes)")
    if not item.embedding:
        raise ValueError("an imported image needs its embedding beside its code (export with "
                         "--codes writes both)")
    done: Future = Future()
    done.set_result((np.frombuffer(item.code, np.uint8),
                     np.asarray(item.embedding, np.float32)))
    return done


def observer(metrics):
    """``name -> callback(batch size)`` for the batch-size histogram (None without metrics)."""
    def observe(name: str):
        if metrics is None:
            return None
        return lambda size: metrics.batch_size.labels(name).observe(size)
    return observe


def _page(row: tuple, offset: int, min_score: float | None, bits: int) -> tuple:
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
