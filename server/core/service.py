"""The service core: encode, add and search in any collection (no gRPC here); reading back, deleting,
counting and the collections themselves are in ``catalog``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from crossbit.indexer.call_context import within
from crossbit.server.config import ServerConfig
from crossbit.server.core.batching import MicroBatcher
from crossbit.server.core.calls import check_caller, ensure_scope
from crossbit.server.core.catalog import CatalogCalls
from crossbit.server.core.collections import DEFAULT, Collection, CollectionRecord, Registry
from crossbit.server.core.exceptions import LimitError, UnavailableError
from crossbit.server.core.images import make_thumbnail
from crossbit.server.core.models import ModelPool
from crossbit.server.core.requests import (
    MODALITIES,
    AddOutcome,
    NewItem,
)
from crossbit.server.core.searching import SearchCalls, _deadline, _remaining
from crossbit.server.core.validation import RequestChecks

log = logging.getLogger(__name__)

SEARCH_BATCH = 256  # most encoded queries searched together





class RetrievalCore(SearchCalls, CatalogCalls):
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
            check_caller()
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
                    check_caller()  # CallerGone is no item's fault: it ends the call
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
