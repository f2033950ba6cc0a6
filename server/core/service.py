"""The service core: encode, add, search and delete over the model and the indexes (no gRPC here)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from crossbit.indexer import Index
from crossbit.indexer.call_context import within
from crossbit.indexer.items import StoreLimit
from crossbit.server.config import ServerConfig
from crossbit.server.core.batching import MicroBatcher
from crossbit.server.core.calls import ensure_scope
from crossbit.server.core.exceptions import LimitError, NotFoundError, UnavailableError
from crossbit.server.core.images import make_thumbnail
from crossbit.server.core.requests import (
    MODALITIES,
    AddOutcome,
    Hit,
    NewItem,
    Query,
    SearchResult,
)
from crossbit.server.core.validation import RequestChecks

if TYPE_CHECKING:  # the model's module loads torch; the core only calls it
    from crossbit.encoders.model import HashModel

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


class RetrievalCore:
    """Everything the gRPC servicer and the web API call. Raises ValueError (bad input),
    LimitError (over a limit), KeyError/NotFoundError, TimeoutError, StoreError."""

    def __init__(self, model: HashModel, indexes: dict[str, Index], config: ServerConfig, metrics=None,
                 model_name: str = "default"):
        self.model = model
        self.indexes = indexes
        self.config = config
        self.metrics = metrics
        self.model_name = model_name
        self.started = time.time()
        self.closing = False
        self.checks = RequestChecks(config, model.bits)
        self.text_batcher = MicroBatcher(self._encode_text_batch, config.max_batch,
                                         config.max_wait_ms, "text-encoder",
                                         self._observe("text"), config.text_workers)
        self.image_batcher = MicroBatcher(self._encode_image_batch, config.max_batch,
                                          config.max_wait_ms, "image-encoder",
                                          self._observe("image"))
        # encoded queries of concurrent requests share index calls: whatever is queued when
        # the worker is free goes in one batch (no waiting: a lone query goes at once)
        self.search_batcher = MicroBatcher(self._search_batch, SEARCH_BATCH, 0.0, "search",
                                           self._observe("search"))

    def _observe(self, name: str):
        if self.metrics is None:
            return None
        return lambda size: self.metrics.batch_size.labels(name).observe(size)

    @property
    def bits(self) -> int:
        return self.model.bits

    # -- encoding ------------------------------------------------------------------------------
    def _encode_text_batch(self, texts: list[str]) -> list:
        enc = self.model.encode_texts(texts, batch_size=max(len(texts), 1))
        return list(zip(enc.codes, enc.embeddings))

    def _encode_image_batch(self, images: list) -> list:
        enc = self.model.encode_images(images, batch_size=max(len(images), 1))
        return list(zip(enc.codes, enc.embeddings))

    def encode(self, texts: Sequence[str], images: Sequence[bytes],
               timeout: float | None = None) -> tuple[list, list]:
        """Codes and embeddings of texts and images, in order; any bad input fails the call."""
        with ensure_scope(timeout):
            return self._encode(texts, images, timeout)

    def _encode(self, texts, images, timeout):
        self.checks.batch(len(texts) + len(images), "texts and images")
        deadline = _deadline(timeout)
        texts = [self.checks.text(t) for t in texts]
        decoded, budget = [], self.checks.budget(images, _remaining(deadline))
        for i, data in enumerate(images):
            try:
                decoded.append(self.checks.decode(data, budget))
            except ValueError as exc:
                raise type(exc)(f"images[{i}]: {exc}") from None
        text_out = self.text_batcher(texts, _remaining(deadline)) if texts else []
        image_out = self.image_batcher(decoded, _remaining(deadline)) if decoded else []
        return text_out, image_out

    # -- adding --------------------------------------------------------------------------------
    def add(self, modality: str, items: Sequence[NewItem | BaseException],
            timeout: float | None = None, first: int = 0,
            seen: dict | None = None) -> list[AddOutcome]:
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
        with ensure_scope(timeout):
            return self._add(modality, items, timeout, first, seen)

    def _add(self, modality, items, timeout, first, seen) -> list[AddOutcome]:
        if self.closing:
            raise UnavailableError("the server is shutting down")
        index = self.index_for(modality)
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
                if modality == "image":
                    image = self.checks.decode(item.payload, budget)
                    thumbs.append(make_thumbnail(image, self.config.thumbnail_size)
                                  if self.config.thumbnails else None)
                    previews.append(self._preview(image))
                    futures.append(self.image_batcher.submit(image))
                else:
                    text = self.checks.text(item.payload)
                    thumbs.append(None)
                    previews.append(None)
                    futures.append(self.text_batcher.submit(text))
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
    def index_for(self, modality: str):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        return self.indexes[modality]

    def search(self, query: Query, timeout: float | None = None) -> SearchResult:
        return self.search_many([query], timeout)[0]

    def search_many(self, queries: Sequence[Query], timeout: float | None = None) -> list[SearchResult]:
        """Answer queries; codes are encoded in shared batches and searched in one index call
        per group of compatible queries."""
        with ensure_scope(timeout):
            return self._search_many(queries, timeout)

    def _search_many(self, queries, timeout) -> list[SearchResult]:
        self.checks.batch(len(queries), "queries")
        deadline = _deadline(timeout)
        for n, q in enumerate(queries):
            try:
                self.checks.query(q)
                if q.text is not None:
                    self.checks.text(q.text)
            except ValueError as exc:
                raise type(exc)(f"queries[{n}]: {exc}" if len(queries) > 1 else str(exc)) from None
        start = time.perf_counter()
        futures = {}
        budget = self.checks.budget([q.image for q in queries], _remaining(deadline))
        for n, q in enumerate(queries):
            if q.text is not None:
                futures[n] = self.text_batcher.submit(q.text)
            elif q.image is not None:
                futures[n] = self.image_batcher.submit(self.checks.decode(q.image, budget))
        codes = np.zeros((len(queries), self.bits // 8), np.uint8)
        embeddings: dict[int, np.ndarray] = {}
        for n, q in enumerate(queries):
            if n in futures:
                code, emb = futures[n].result(timeout=_remaining(deadline))
                codes[n], embeddings[n] = code, emb
            else:
                codes[n] = np.frombuffer(q.code, dtype=np.uint8)
        encode_ms = 1000 * (time.perf_counter() - start)
        _remaining(deadline)
        searches = []
        for n, q in enumerate(queries):
            rerank = bool((self.config.rerank if q.rerank is None else q.rerank)
                          and n in embeddings)
            key = (q.modality, q.top_k or self.config.default_top_k, q.nprobe or None,
                   q.radius, rerank, bool(q.fresh))
            searches.append((self.search_batcher.submit((key, codes[n], embeddings.get(n),
                                                         deadline)), rerank))
        found = [future.result(timeout=_remaining(deadline)) for future, _ in searches]
        with within(deadline, fresh=any(q.fresh for q in queries)):
            hits = self.hits([q.modality for q in queries], [rows for rows, _, _ in found],
                             [items for _, _, items in found])
        return [SearchResult(h, self.bits, encode_ms if n in futures else 0.0, ms, rerank)
                for n, (h, (_, ms, _), (_, rerank)) in enumerate(zip(hits, found, searches))]

    def _search_batch(self, items: list) -> list:
        """Search a batch of encoded queries: one index call per group of compatible ones.

        Each query's answer is (ids, distances, scores or None), the group's time, and the
        group's stored items, read in one go when they fit one response's budget (else None:
        each caller then reads its own, within its own budget).
        """
        groups: dict[tuple, list[int]] = {}
        for n, (key, _, _, _) in enumerate(items):
            groups.setdefault(key, []).append(n)
        out: list = [None] * len(items)
        for (modality, k, nprobe, radius, rerank, fresh), members in groups.items():
            t0 = time.perf_counter()
            codes = np.stack([items[n][1] for n in members])
            try:
                deadlines = [items[n][3] for n in members]  # the most patient caller's
                with within(None if None in deadlines else max(deadlines), fresh=fresh):
                    rows = self.search_group(modality, codes, k, nprobe, radius, rerank,
                                             [items[n][2] for n in members])
                    wanted = sorted({int(i) for ids, _, _ in rows for i in ids if i >= 0})
                    try:
                        stored = self.index_for(modality).items(
                            wanted, max_bytes=self.config.max_response_bytes)
                    except StoreLimit:
                        stored = None
            except Exception as exc:  # this group's callers hear of it; other groups go on
                for n in members:
                    out[n] = exc
                continue
            ms = 1000 * (time.perf_counter() - t0)
            for n, r in zip(members, rows):
                out[n] = (r, ms, stored)
        return out

    def search_group(self, modality, codes, k, nprobe, radius, rerank, embeddings) -> list:
        """Per query (ids, distances, scores or None) from one index call."""
        index = self.index_for(modality)
        if radius is not None:
            found = index.range_search(codes, radius)
            return [(ids[:k], dist[:k], None) for ids, dist in found]
        if rerank:
            res = index.search_rerank(codes, np.stack(embeddings), k,
                                      shortlist=max(k, self.config.rerank_shortlist),
                                      nprobe=nprobe)
            return list(zip(res.ids, res.distances, res.scores))
        res = index.search(codes, k, nprobe=nprobe)
        return [(i, d, None) for i, d in zip(res.ids, res.distances)]

    def hits(self, modalities: Sequence[str], rows: Sequence[tuple],
              prefetched: Sequence[dict | None] | None = None) -> list[list[Hit]]:
        """Hits with their stored keys and metadata, within the response budget.

        The budget (``max_response_bytes``) bounds the keys and metadata the answer carries,
        counted while they are read, so a small request cannot make a huge answer.
        ``prefetched``: per query, the items its search group already read (or None).
        """
        limit = self.config.max_response_bytes
        prefetched = prefetched or [None] * len(rows)
        wanted: dict[str, set[int]] = {}
        for modality, (ids, _, _), got in zip(modalities, rows, prefetched):
            if got is None:
                wanted.setdefault(modality, set()).update(int(i) for i in ids if i >= 0)
        try:
            stored = {m: self.index_for(m).items(sorted(w), max_bytes=limit)
                      for m, w in wanted.items()}
        except StoreLimit:
            raise LimitError(self._too_large(limit, sum(map(len, wanted.values())))) from None
        out, total, bits = [], 0, float(self.bits)
        for modality, (ids, dist, scores), got in zip(modalities, rows, prefetched):
            items = got if got is not None else stored[modality]
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

    # -- deleting and stats ---------------------------------------------------------------------
    def delete(self, ids: Sequence[int], keys: Sequence[str], modality: str = "image",
               timeout: float | None = None) -> int:
        """Delete by ids and keys; any unknown one fails the call and nothing is deleted."""
        if self.closing:
            raise UnavailableError("the server is shutting down")
        index = self.index_for(modality)
        self.checks.batch(len(ids) + len(keys), "ids and keys")
        if not ids and not keys:
            raise ValueError("give ids or keys to delete")
        with within(_deadline(timeout)):
            found = index.ids_for_keys(list(keys)) if keys else {}
            missing = [k for k in keys if k not in found]
            if missing:
                raise NotFoundError(f"unknown keys: {missing[:20]}")
            all_ids = sorted({int(i) for i in ids} | set(found.values()))
            try:
                return index.remove(all_ids)
            except KeyError as exc:
                raise NotFoundError(str(exc.args[0]) if exc.args else "unknown ids") from None

    def stats(self) -> dict:
        # each index counted once (a count is a Strong read, about a time tick, on Milvus)
        image_stats, text_stats = self.indexes["image"].stats(), self.indexes["text"].stats()
        return {"images": image_stats["items"], "texts": text_stats["items"],
                "index_kind": image_stats["kind"], "bits": self.bits, "model": self.model_name,
                "gpu": self.model.device.type == "cuda" or image_stats["kind"] == "gpu",
                "uptime_s": time.time() - self.started,
                "index_params": {"image": image_stats, "text": text_stats}}

    def close(self) -> None:
        """Stop the batchers (after what is queued) and close the indexes (snapshot)."""
        self.closing = True
        self.text_batcher.close()
        self.image_batcher.close()
        self.search_batcher.close()
        for index in self.indexes.values():
            index.close()
