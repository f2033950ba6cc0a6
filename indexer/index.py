"""``open_index``: a durable binary index, SQLite as the truth and a FAISS backend for speed."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from crossbit.indexer.backends import (
    GPU_MAX_K,
    KINDS,
    Backend,
    IVFBackend,
    gpu_available,
    make_backend,
    set_thread_omp,
    torch_cuda_available,
)
from crossbit.indexer.embeddings import EmbeddingTable, unit_rows
from crossbit.indexer.locks import RWLock
from crossbit.indexer.store import Item, Store, StoreWrite, id_digest, repeated_items

log = logging.getLogger(__name__)

SNAPSHOT = "index.snapshot"
STORE = "store.sqlite3"
ID_MARK = "ids.mark"
LOCK = "index.lock"
MAGIC = b"CROSSBIT-SNAPSHOT-1\n"
MAX_K = 100_000


class Results(NamedTuple):
    """Search results, one row per query, padded with id -1."""

    ids: np.ndarray  # int64 (n, k)
    distances: np.ndarray  # int32 (n, k) Hamming distances


class Reranked(NamedTuple):
    ids: np.ndarray  # int64 (n, k)
    distances: np.ndarray  # int32 (n, k)
    scores: np.ndarray  # float32 (n, k) cosine similarity of float embeddings


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


def _check_ids(ids, n: int, name: str = "ids") -> np.ndarray:
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
    """Query embeddings as float32 (n, d), or a ValueError."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != n:
        raise ValueError(f"embeddings must have shape ({n}, d)")
    return embeddings


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


class BinaryIndex:
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
        self._lock = RWLock()
        self._closed = False
        self._changes = 0
        self.opened_from = ""
        self.backend = self._open_backend()
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
        backend, header = self._load_snapshot()
        seq = 0
        if backend is not None:
            seq = int(header["seq"])
            self.store.raise_mark(int(header.get("next_id", 0)))
            replayed = replay(backend, self.store, seq)
            problem = self._disagreement(backend, header)
            if problem:
                log.warning("index %s: the snapshot and the store disagree (%s); rebuilding "
                            "from the store, which is the truth: what the store lost is lost",
                            self.directory, problem)
                backend = None
            else:
                how = f"loaded snapshot at seq {seq}, replayed {replayed} changes"
        if backend is None:
            backend = self._new_backend()
            for ids, codes in self.store.iter_codes():
                backend.add(codes, ids)
            seq = self.store.max_seq()
            how = f"rebuilt from the store ({len(backend)} items)"
        self._snapshot_seq = seq
        self.opened_from = how
        log.info("index %s (%s, %d bits): %s in %.2fs", self.directory, self.kind, self.bits, how,
                 time.perf_counter() - start)
        return backend

    def _disagreement(self, backend: Backend, header: dict) -> str:
        """Why a loaded snapshot (with the log replayed) does not match the store, or ""."""
        behind = store_behind(self.store, int(header["seq"]))
        held = backend.all_ids()
        if not behind and id_digest(held) == self.store.id_digest():
            return ""  # same count, bounds and checksums of ids: agreed (0.05 s at 1M items)
        parts = ([behind] if behind else []) + \
            id_differences(held, self.store.all_ids(), "the snapshot")
        return "; ".join(parts)

    def _load_snapshot(self) -> tuple[Backend | None, dict]:
        path = self.directory / SNAPSHOT
        if not path.exists():
            log.info("index %s: no snapshot", self.directory)
            return None, {}
        try:
            header, payload = read_snapshot(path)
            if header["bits"] != self.bits or header["kind"] != self.kind:
                raise ValueError(f"snapshot is {header['kind']}/{header['bits']} bits, "
                                 f"index is {self.kind}/{self.bits}")
            backend = self._new_backend()
            backend.load_bytes(payload, header["extra"])
            return backend, header
        except Exception as exc:  # any unreadable snapshot: the store has everything
            log.warning("index %s: snapshot unusable (%s); rebuilding from the store",
                        self.directory, exc)
            return None, {}

    # -- writes -------------------------------------------------------------------------------
    def add(self, codes: np.ndarray, ids: Sequence[int] | np.ndarray | None = None,
            keys: Sequence[str | None] | None = None, metadata: Sequence[dict] | None = None,
            embeddings: np.ndarray | None = None,
            thumbnails: Sequence[bytes | None] | None = None) -> np.ndarray:
        """Add (or, for a known key or id, replace) items; committed to SQLite before returning.

        Args:
            codes: uint8 (n, bits // 8).
            ids: optional int64 ids; assigned when None.
            keys: optional string keys (None entries allowed).
            metadata: optional JSON-serialisable dicts.
            embeddings: optional float32 (n, d) for re-ranking.
            thumbnails: optional bytes per item (JPEG).

        Returns:
            the int64 ids of the items.

        Raises:
            ValueError: a key or id given twice in the call (nothing is written then).
        """
        if ids is not None:
            ids = _check_ids(ids, len(codes))
        repeats = repeated_items(keys, ids)
        if repeats:
            n, why = next(iter(repeats.items()))
            raise ValueError(f"item {n}: {why}")
        report = self.add_items(codes, ids, keys, metadata, embeddings, thumbnails)
        return report.ids

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
        codes = check_codes(codes, self.bits)
        n = len(codes)
        if ids is not None:
            ids = self._list(ids, n, "ids", (int, np.integer, type(None)))
            for i, v in enumerate(ids):
                if v is not None and not 0 <= int(v) <= np.iinfo(np.int64).max:
                    raise ValueError(f"ids[{i}] must be a non-negative int64, got {v}")
            if all(v is None for v in ids):
                ids = None
        keys = self._list(keys, n, "keys", (str, type(None)))
        metadata = self._list(metadata, n, "metadata", (dict, type(None)))
        if thumbnails is not None:
            thumbnails = self._list(thumbnails, n, "thumbnails", (bytes, type(None)))
        if previews is not None:
            previews = self._list(previews, n, "previews", (bytes, type(None)))
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or len(embeddings) != n:
                raise ValueError(f"embeddings must have shape ({n}, d), got {embeddings.shape}")
        if n == 0:
            return StoreWrite(np.zeros(0, dtype=np.int64), [], {}, [])
        for m in metadata:
            if m is not None:
                try:
                    json.dumps(m)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None
        with self._lock.write():
            write = self.store.add(codes, ids, keys, metadata, embeddings, thumbnails, positions,
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
            self._changes += len(out)
            if isinstance(self.backend, IVFBackend) and self.backend.needs_retrain():
                chunks = list(self.store.iter_codes())
                self.backend.retrain(np.concatenate([c[0] for c in chunks]),
                                     np.concatenate([c[1] for c in chunks]))
        return write

    def verify(self) -> str:
        """Check the invariant (the backend holds exactly the store's ids, each once); "" when
        it holds, else what differs."""
        with self._lock.read():
            stored = self.store.all_ids()
            held = self.backend.all_ids()
        return "; ".join(id_differences(held, stored, "the index"))

    @staticmethod
    def _list(values, n: int, name: str, types) -> list:
        if values is None:
            return [None] * n
        if isinstance(values, (str, bytes)):
            raise TypeError(f"{name} must be a list with one entry per code, not a single value")
        values = list(values)
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} codes")
        for i, v in enumerate(values):
            if not isinstance(v, types):
                raise TypeError(f"{name}[{i}] has type {type(v).__name__}")
        return values

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove items by id. Raises KeyError naming unknown ids (then nothing is removed)."""
        self._check_open()
        ids = np.unique(np.asarray(ids).ravel())
        ids = _check_ids(ids, len(ids))
        if not len(ids):
            return 0
        with self._lock.write():
            self.store.remove(ids)
            self.backend.remove(ids)
            if self.vectors is not None:
                self.vectors.remove(ids)
            self._changes += len(ids)
        return len(ids)

    def ids_for_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """Map keys to ids; unknown keys are absent from the answer."""
        return self.store.ids_for_keys(list(keys))

    # -- reads --------------------------------------------------------------------------------
    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        limit = getattr(self.backend, "max_k", MAX_K)
        limit = min(limit, MAX_K)
        if k <= 0 or k > limit:
            raise ValueError(f"k must be between 1 and {limit} for a {self.kind} index, got {k}")
        return int(k)

    def search(self, codes: np.ndarray, k: int, nprobe: int | None = None) -> Results:
        """The k nearest items of each query code by Hamming distance.

        Returns:
            :class:`Results`, ids padded with -1 (and distance ``bits + 1``) where fewer
            than k items exist.
        """
        self._check_open()
        codes = check_codes(codes, self.bits, "query codes")
        k = self._check_k(k)
        if nprobe is not None and (not isinstance(nprobe, (int, np.integer)) or nprobe <= 0):
            raise ValueError(f"nprobe must be a positive int, got {nprobe!r}")
        set_thread_omp(self.threads)
        with self._lock.read():
            ids, distances = self.backend.search(codes, k, nprobe)
        ids = np.asarray(ids, dtype=np.int64)
        distances = np.where(ids >= 0, distances, self.bits + 1).astype(np.int32)
        return Results(ids, distances)

    def search_rerank(self, codes: np.ndarray, embeddings: np.ndarray, k: int,
                      shortlist: int = 100, nprobe: int | None = None) -> Reranked:
        """Hamming shortlist of ``shortlist`` items, re-ordered by cosine of the float embeddings.

        Items stored without an embedding keep their Hamming order after those with one.
        """
        k = self._check_k(k)
        check_embeddings(embeddings, len(codes))
        first = self.search(codes, min(max(k, shortlist), getattr(self.backend, "max_k", MAX_K)),
                            nprobe)
        if self.vectors is not None:
            with self._lock.read():
                vectors, found = self.vectors.gather(first.ids)
        else:
            stored = self.embeddings(np.unique(first.ids[first.ids >= 0]))
            vectors, found = vectors_from(stored, first.ids, embeddings.shape[1])
        return rerank(first, embeddings, vectors, found, k, self.bits)

    def range_search(self, codes: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Hash lookup: per query, (ids, distances) of every item within Hamming ``radius``."""
        self._check_open()
        codes = check_codes(codes, self.bits, "query codes")
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or \
                not 0 <= radius <= self.bits:
            raise ValueError(f"radius must be an int between 0 and {self.bits}, got {radius!r}")
        set_thread_omp(self.threads)
        with self._lock.read():
            return self.backend.range_search(codes, int(radius))

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
                "embeddings_in_memory": None if self.vectors is None else len(self.vectors),
                "embedding_bytes": None if self.vectors is None else self.vectors.nbytes}

    # -- persistence ----------------------------------------------------------------------------
    def snapshot(self) -> bool:
        """Write the backend to disk (temp file, fsync, rename) with the store's high-water mark.

        Returns:
            True when written, False when the disk refused (logged; the store keeps everything).
        """
        with self._lock.write():
            seq = self.store.max_seq()
            next_id = max(self.store.id_counter())
            payload = self.backend.to_bytes()
            extra = self.backend.snapshot_extra()
            self._changes = 0
        header = {"kind": self.kind, "bits": self.bits, "seq": seq, "size": len(payload),
                  "crc32": zlib.crc32(payload), "extra": extra, "count": len(self.backend),
                  "next_id": next_id,
                  "written": time.time()}
        path = self.directory / SNAPSHOT
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + json.dumps(header).encode() + b"\n")
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(self.directory)
        except OSError as exc:
            log.error("index %s: snapshot failed (%s); the store still holds every item",
                      self.directory, exc)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        self._snapshot_seq = seq
        self.store.compact_log(seq)
        log.info("index %s: snapshot at seq %d (%d items)", self.directory, seq, header["count"])
        return True

    def _snapshot_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self._changes:
                try:
                    self.snapshot()
                except Exception:  # keep the thread alive; the next round tries again
                    log.exception("background snapshot failed")

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


class DirectoryInUse(RuntimeError):
    """Another process holds this index folder (a second server on the same data)."""


def lock_directory(directory: Path):
    """Hold an exclusive lock on an index folder for as long as the returned file is open.

    One process serves a folder: two would each keep their own in-memory index of one store
    (each missing the other's adds) and their own idea of the id mark.
    """
    f = open(directory / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise DirectoryInUse(f"{directory} is in use by {holder}: one crossbit server (or "
                             "reindex, or check --repair) per data directory; stop it first, "
                             "or give this one another --data") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    return f


class ModelMismatch(ValueError):
    """The store holds codes of another model: searching them with this one returns garbage."""


def check_model(store: Store, model: dict, directory: Path) -> None:
    """Record the model of a store's codes on first use; refuse another model afterwards."""
    stored = store.model_record()
    if stored is None:
        if store.count():
            log.warning("index %s: no model recorded for its %d items (made before crossbit "
                        "kept one); recording %s", directory, store.count(), model["name"])
        store.set_model_record(model)
        return
    if stored.get("fingerprint") != model.get("fingerprint"):
        raise ModelMismatch(
            f"{directory} holds codes made by {stored.get('name')} (fingerprint "
            f"{stored.get('fingerprint')}, {stored.get('bits')} bits, {stored.get('text_model')}), "
            f"not by {model.get('name')} (fingerprint {model.get('fingerprint')}): serve it with "
            "the model that made it, or re-encode it first (crossbit reindex --data DIR "
            "--model ...)")


def read_snapshot(path: Path) -> tuple[dict, bytes]:
    """(header, payload) of a snapshot file; ValueError when it is not whole."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError("bad magic")
    header_end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC) : header_end])
    payload = data[header_end + 1 :]
    if len(payload) != header["size"] or zlib.crc32(payload) != header["crc32"]:
        raise ValueError("checksum mismatch (truncated or corrupt)")
    return header, payload


def replay(backend: Backend, store: Store, seq: int) -> int:
    """Bring a backend loaded from a snapshot at ``seq`` up to the store: every id the log
    touched since leaves it and, if still stored, enters it again. Returns the entries seen."""
    entries = store.log_since(seq)
    touched = np.unique(np.array([e[2] for e in entries], dtype=np.int64))
    if len(touched):
        present = touched[backend.contains(touched)]
        if len(present):
            backend.remove(present)
        ids, codes = store.codes_for(touched)
        if len(ids):
            backend.add(codes, ids)
    return len(entries)


def store_behind(store: Store, seq: int) -> str:
    """Why a store is older than a snapshot taken at ``seq``, or "" when it is not."""
    behind = seq - store.max_seq()
    if behind <= 0:
        return ""
    return (f"the store's change log ends {behind} changes before the snapshot's (a lost -wal "
            "file, or a store restored from an older copy)")


def id_differences(held: np.ndarray, stored: np.ndarray, holder: str) -> list[str]:
    """What differs between the ids an index holds (any order, repeats kept) and the store's
    (sorted): the invariant is that they are the same ids, each held once."""
    unique, counts = np.unique(held, return_counts=True)
    out = []
    if (counts > 1).any():
        out.append(f"{holder} holds {int((counts > 1).sum())} ids more than once "
                   f"({_preview(unique[counts > 1])})")
    lost = np.setdiff1d(unique, stored)
    if len(lost):
        out.append(f"{len(lost)} ids in {holder} are not in the store ({_preview(lost)})")
    missing = np.setdiff1d(stored, unique)
    if len(missing):
        out.append(f"{len(missing)} stored ids are not in {holder} ({_preview(missing)})")
    return out


def _preview(ids: np.ndarray, n: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_index(directory: str | os.PathLike, bits: int, kind: str = "auto", **options) -> BinaryIndex:
    """Open (or create) a binary index in ``directory``.

    Args:
        directory: where the SQLite store and the snapshot live.
        bits: code length (a multiple of 8).
        kind: ``flat``, ``ivf``, ``hnsw``, ``gpu``, ``milvus`` or ``auto`` (GPU flat with a
            GPU, else exact flat with crossbit's kernel).
        **options: ``threads`` (OpenMP threads per call), ``snapshot_interval`` (seconds),
            ``synchronous`` (SQLite), and backend options (ivf: ``train_size``, ``nprobe``,
            ``nlist``; hnsw: ``m``, ``ef_search``; gpu: ``device``; milvus: ``uri``...).
    """
    if kind == "milvus":
        from crossbit.indexer.milvus import MilvusIndex

        return MilvusIndex(directory, bits, **options)
    return BinaryIndex(directory, bits, kind, **options)


__all__ = ["BinaryIndex", "Results", "Reranked", "open_index", "check_codes", "GPU_MAX_K"]
