"""``open_index``: a durable binary index, SQLite as the truth and a FAISS backend for speed."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossbit.indexer.backends import (
    GPU_MAX_K,
    KINDS,
    Backend,
    gpu_available,
    make_backend,
    set_thread_omp,
    torch_cuda_available,
)
from crossbit.indexer.embeddings import EmbeddingTable
from crossbit.indexer.filters import Filter
from crossbit.indexer.folder import ID_MARK, STORE, check_integrity, check_model, lock_directory
from crossbit.indexer.index_filtered import FilteredIndex, check_filter, plain_metadata
from crossbit.indexer.index_upkeep import Upkeep
from crossbit.indexer.interface import (
    MAX_K,
    Index,
    Results,
    check_codes,
    check_ids,
    check_items,
    check_radius,
)
from crossbit.indexer.items import Item, StoreWrite, merged_metadata
from crossbit.indexer.locks import RWLock
from crossbit.indexer.snapshot import SNAPSHOT, open_backend
from crossbit.indexer.store import Store

log = logging.getLogger(__name__)



class BinaryIndex(FilteredIndex, Upkeep, Index):
    """A collection of binary codes with ids, keys, metadata and float embeddings.

    Every add commits to SQLite before it returns, then enters the in-memory backend.
    The backend is snapshotted in the background and on close; on open the snapshot is
    loaded and the store's log replayed past it, or the backend rebuilt from the store.
    """

    def __init__(self, directory: str | os.PathLike, bits: int, kind: str = "auto",
                 threads: int | None = None, snapshot_interval: float = 30.0,
                 synchronous: str = "FULL", embeddings_in_memory: bool = True,
                 model: dict | None = None, **options):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
        if bits % 8 or bits <= 0:
            raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bits = bits
        self.requested_kind = kind
        self.kind = self._resolve(kind)
        self.options = self._options(options)
        self.threads = threads
        self._lock_file = lock_directory(self.directory)
        try:
            self.store = Store(self.directory / STORE, bits, synchronous, self.directory / ID_MARK)
        except BaseException:
            self._lock_file.close()
            raise
        if model is not None:
            try:
                check_model(self.store, model, self.directory)
            except ValueError:
                self.store.close()
                self._lock_file.close()
                raise
        try:
            self.integrity = check_integrity(self.store, self.directory)
        except BaseException:
            self.store.close()
            self._lock_file.close()
            raise
        self._lock = RWLock()
        self._closed = False
        self._changes = 0
        self._retraining: threading.Thread | None = None
        self.opened_from = ""
        self.backend = self._open_backend()
        self._open_attributes()
        if self.opened_from.startswith("rebuilt") and len(self.backend):
            # a rebuild (no snapshot, a bad one, a store that lost its tail) is written at
            # once: until then the old snapshot on disk disagrees with the store, and
            # crossbit check beside this server would report that as damage
            self.snapshot()
        # re-ranking reads the float embeddings of every shortlist: with the table they are
        # all in memory (float16, 2 bytes per dimension and item), else read from SQLite
        self.vectors: EmbeddingTable | None = None
        if embeddings_in_memory:
            start = time.perf_counter()
            self.vectors = EmbeddingTable.from_blobs(self.store.iter_embeddings())
            log.info("index %s: %d embeddings in memory (%.0f MB) in %.2fs", self.directory,
                     len(self.vectors), self.vectors.nbytes / 1e6, time.perf_counter() - start)
        self._stop = threading.Event()
        self._snapshotter = None
        if snapshot_interval and snapshot_interval > 0:
            self._snapshotter = threading.Thread(target=self._snapshot_loop,
                                                 args=(snapshot_interval,), daemon=True,
                                                 name="crossbit-snapshot")
            self._snapshotter.start()

    # -- setup ------------------------------------------------------------------------------
    def _resolve(self, kind: str) -> str:
        if kind != "auto":
            return kind
        if gpu_available() or torch_cuda_available():
            return "gpu"
        # exact: recall 1 on anyone's data, and with crossbit's kernel fast enough at 1M
        # codes (BENCHMARKS.md); IVF and HNSW trade recall for speed, so they are asked for
        return "flat"

    def _options(self, options: dict) -> dict:
        if self.kind in ("flat", "gpu"):  # settings of other kinds (nprobe...) do not apply
            options = {k: v for k, v in options.items() if k in ("engine", "device")}
        return options

    def _new_backend(self) -> Backend:
        return make_backend(self.kind, self.bits, dict(self.options))

    def _open_backend(self) -> Backend:
        start = time.perf_counter()
        backend, self._snapshot_seq, self.opened_from = open_backend(
            self.directory, self.store, self.kind, self.bits, self._new_backend)
        log.info("index %s (%s, %d bits): %s in %.2fs", self.directory, self.kind, self.bits,
                 self.opened_from, time.perf_counter() - start)
        return backend

    # -- writes -------------------------------------------------------------------------------
    def add_items(self, codes: np.ndarray, ids: Sequence[int | None] | None = None,
                  keys: Sequence[str | None] | None = None,
                  metadata: Sequence[dict | None] | None = None,
                  embeddings: np.ndarray | None = None,
                  thumbnails: Sequence[bytes | None] | None = None,
                  positions: Sequence[int] | None = None,
                  previews: Sequence[bytes | None] | None = None) -> StoreWrite:
        """Like :meth:`add`, but per item: ``ids`` may mix given ids and None (assign), and an
        item whose key or id repeats an earlier item of the call is refused alone
        (``positions`` numbers the items in those messages). ``previews``: an optional
        larger JPEG per item, for viewing.

        Returns:
            a :class:`StoreWrite`: ids (-1 where refused), replaced ids, refusals by position.
        """
        self._check_open()
        codes, ids, keys, metadata_json, embeddings, thumbnails, previews = check_items(
            codes, self.bits, ids, keys, metadata, embeddings, thumbnails, previews)
        if len(codes) == 0:
            return StoreWrite(np.zeros(0, dtype=np.int64), [], {}, [])
        with self._lock.write():
            sent_json = metadata_json
            keyed = [k for k in keys if k is not None]
            if keyed:  # a re-add keeps the fields it does not send (under the write lock)
                metadata_json = merged_metadata(keys, metadata_json,
                                                self.store.metadata_for_keys(keyed))
            write = self.store.add(codes, ids, keys, metadata_json, embeddings, thumbnails, positions,
                                   previews)
            # unchanged items were not written: the backend already holds them as they are
            kept = np.array([o in ("added", "replaced") for o in write.outcomes], dtype=bool)
            out = write.ids[kept]
            # the invariant, kept here: the backend holds exactly the store's ids, each once.
            # Before this call it did; the store says which of its ids this call replaced or
            # removed, so those leave the backend, and every id it wrote enters it once.
            if len(np.unique(out)) != len(out):  # the store refuses repeats; never trust it blind
                raise RuntimeError(f"index {self.directory}: one add wrote an id twice")
            if self.vectors is not None:
                self.vectors.remove(np.asarray(write.replaced, np.int64))
                if embeddings is not None:
                    self.vectors.put(out, embeddings[kept])
            stale = np.array(sorted(set(write.replaced)), dtype=np.int64)
            if len(stale):
                stale = stale[self.backend.contains(stale)]
                if len(stale):
                    self.backend.remove(stale)
            if len(out):
                self.backend.add(codes[kept], out)
            # the attribute index follows the same rule: what the call replaced leaves it, what
            # it wrote enters it as stored
            if len(write.replaced):
                self.attributes.remove(np.asarray(write.replaced, np.int64))
            # as stored: the merged fields when the re-add kept some (the caller's dict, saving
            # a JSON parse, only when it is what was stored)
            given = [None] * len(codes) if metadata is None else list(metadata)
            self._index_rows(self.attributes, [
                (int(write.ids[i]), keys[i], codes[i].tobytes(),
                 given[i] if metadata_json[i] is sent_json[i] and plain_metadata(given[i])
                 else metadata_json[i])
                for i in np.flatnonzero(kept)])
            self._changes += len(out)
            retrain = getattr(self.backend, "needs_retrain", bool)() and self._retraining is None
            if retrain:
                self._retraining = threading.Thread(target=self._retrain, daemon=True,
                                                    name="crossbit-ivf-retrain")
        if retrain:
            self._retraining.start()
        return write

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove items by id. Raises KeyError naming unknown ids (then nothing is removed)."""
        self._check_open()
        ids = np.unique(np.asarray(ids).ravel())
        ids = check_ids(ids, len(ids))
        if not len(ids):
            return 0
        with self._lock.write():
            self.store.remove(ids)
            self.backend.remove(ids)
            self.attributes.remove(ids)
            if self.vectors is not None:
                self.vectors.remove(ids)
            self._changes += len(ids)
        return len(ids)

    def ids_for_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """Map keys to ids; unknown keys are absent from the answer."""
        return self.store.ids_for_keys(list(keys))

    # -- reads --------------------------------------------------------------------------------
    @property
    def max_k(self) -> int:
        return min(getattr(self.backend, "max_k", MAX_K), MAX_K)

    def search(self, codes: np.ndarray, k: int, nprobe: int | None = None,
               filter: Filter | None = None) -> Results:
        """The k nearest items of each query code by Hamming distance, among those matching
        ``filter`` (exact on the exact kinds; IVF and HNSW choose per call, see
        :mod:`~crossbit.indexer.index_filtered`).

        Returns:
            :class:`Results`, ids padded with -1 (and distance ``bits + 1``) where fewer
            than k items (match).
        """
        self._check_open()
        codes = check_codes(codes, self.bits, "query codes")
        k = self.check_k(k)
        flt = check_filter(filter)
        if nprobe is not None and (not isinstance(nprobe, (int, np.integer)) or nprobe <= 0):
            raise ValueError(f"nprobe must be a positive int, got {nprobe!r}")
        set_thread_omp(self.threads)
        with self._lock.read():
            if flt is None:
                ids, distances = self.backend.search(codes, k, nprobe)
                if not self.backend.exact:
                    ids, distances = self._complete(codes, k, ids, distances)
            else:
                ids, distances = self._filtered_search(codes, k, nprobe, flt)
        ids = np.asarray(ids, dtype=np.int64)
        distances = np.where(ids >= 0, distances, self.bits + 1).astype(np.int32)
        return Results(ids, distances)

    def shortlist_vectors(self, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        if self.vectors is None:
            return super().shortlist_vectors(ids, dim)
        with self._lock.read():
            return self.vectors.gather(ids)

    def range_search(self, codes: np.ndarray, radius: int,
                     filter: Filter | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Hash lookup: per query, (ids, distances) of every (matching) item within Hamming
        ``radius``, exact on every kind (IVF and HNSW answer it with the exact scan)."""
        self._check_open()
        codes = check_codes(codes, self.bits, "query codes")
        radius = check_radius(radius, self.bits)
        flt = check_filter(filter)
        set_thread_omp(self.threads)
        with self._lock.read():
            if flt is not None:
                return self._filtered_range(codes, radius, flt)
            if not self.backend.exact:
                return self._range_in(codes, radius, self.attributes.live)
            return self.backend.range_search(codes, radius)

    def items(self, ids: Sequence[int], max_bytes: int | None = None) -> dict[int, Item]:
        """Stored key, metadata and time added for the given ids (unknown ids absent);
        StoreLimit past ``max_bytes`` of keys and metadata."""
        return self.store.items(ids, max_bytes)

    def thumbnail(self, item_id: int) -> bytes | None:
        """The stored thumbnail (None when the item has none). KeyError for an unknown id."""
        return self.store.thumbnail(item_id)

    def preview(self, item_id: int) -> bytes | None:
        """The stored larger preview (None without one). KeyError for an unknown id."""
        return self.store.preview(item_id)

    def codes(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their stored codes)."""
        return self.store.codes_for(ids)

    def embeddings(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored float32 embeddings by id, as given (items without one are absent)."""
        return self.store.embeddings([int(i) for i in ids])

    def page(self, offset: int, limit: int, newest_first: bool = False) -> list[Item]:
        """Items in id order (or newest first), ``limit`` of them from ``offset``."""
        return self.store.page(offset, limit, newest_first)

    def __len__(self) -> int:
        return len(self.backend)

    def stats(self) -> dict:
        """Size, kind (and what ``auto`` chose), backend parameters and persistence state.

        ``items`` (the backend) and ``stored`` (SQLite) are read together under the lock, so
        an add in progress is seen whole or not at all.
        """
        with self._lock.read():
            items, stored = len(self.backend), self.store.count()
        return {"kind": self.kind, "requested_kind": self.requested_kind, "bits": self.bits,
                "items": items, "stored": stored,
                "exact": bool(self.backend.exact), "params": self.backend.params(),
                "threads": self.threads, "opened_from": self.opened_from,
                "snapshot_seq": self._snapshot_seq, "directory": str(self.directory),
                "integrity": self.integrity,
                "embeddings_in_memory": None if self.vectors is None else len(self.vectors),
                "embedding_bytes": None if self.vectors is None else self.vectors.nbytes,
                "attribute_index": self._attribute_stats()}

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"index {self.directory} is closed")

    def close(self) -> None:
        """Stop the snapshot thread, snapshot if anything changed, close the store."""
        if self._closed:
            return
        self._stop.set()
        if self._snapshotter is not None:
            self._snapshotter.join(timeout=60)
        self.wait_retrained(timeout=600)
        if self._changes or not (self.directory / SNAPSHOT).exists():
            try:
                self.snapshot()
            except Exception:
                log.exception("final snapshot failed")
        self._closed = True
        self.store.close()
        self._lock_file.close()

    def __enter__(self) -> BinaryIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["BinaryIndex", "GPU_MAX_K"]
