"""In-memory search backends over packed binary codes: the base, the exact flat kinds, ``make_backend``.

IVF and HNSW live in ``backends_approx``, the GPU kinds in ``backends_gpu``.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger(__name__)

GPU_MAX_K = 2048  # faiss GPU k-selection limit


def faiss_module():
    import faiss

    return faiss


_thread_state = threading.local()


def set_thread_omp(threads: int | None) -> None:
    """Set FAISS's OpenMP threads for the calling thread (an OpenMP setting is per thread)."""
    if threads and getattr(_thread_state, "omp", None) != threads:
        faiss_module().omp_set_num_threads(threads)
        _thread_state.omp = threads


def gpu_available() -> bool:
    """True when faiss was built with GPU support and sees a GPU (never touches a GPU class otherwise)."""
    faiss = faiss_module()
    return hasattr(faiss, "GpuIndexBinaryFlat") and faiss.get_num_gpus() > 0


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class Backend:
    """What every backend offers. ``ids`` are int64; results pad with -1 / max distance."""

    kind = "base"
    max_k = 1 << 30
    exact = True

    def __init__(self, bits: int):
        self.bits = bits

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        raise NotImplementedError

    def remove(self, ids: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, codes: np.ndarray, k: int, nprobe: int | None = None):
        raise NotImplementedError

    def range_search(self, codes: np.ndarray, radius: int):
        """Per query, (ids, distances) of every item within ``radius``, nearest first."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def params(self) -> dict:
        return {}

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    def load_bytes(self, payload: bytes, extra: dict) -> None:
        raise NotImplementedError

    def snapshot_extra(self) -> dict:
        return {}

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(ids, dtype=np.int64), self.all_ids())

    def all_ids(self) -> np.ndarray:
        """Every id held, once per entry (an id held twice shows twice), in no set order."""
        raise NotImplementedError


def range_lists(lims, distances, labels, nq):
    out = []
    for q in range(nq):
        d = distances[lims[q] : lims[q + 1]]
        i = labels[lims[q] : lims[q + 1]]
        order = np.lexsort((i, d))
        out.append((i[order].astype(np.int64), d[order].astype(np.int32)))
    return out


class FlatBackend(Backend):
    """Exact search: ``IndexBinaryIDMap2(IndexBinaryFlat)``."""

    kind = "flat"

    def __init__(self, bits: int):
        super().__init__(bits)
        faiss = faiss_module()
        self.index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))

    def add(self, codes, ids):
        self.index.add_with_ids(codes, ids)

    def remove(self, ids):
        self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(self, codes, k, nprobe=None):
        distances, labels = self.index.search(codes, k)
        return labels, distances

    def range_search(self, codes, radius):
        lims, distances, labels = self.index.range_search(codes, radius + 1)
        return range_lists(lims, distances, labels, len(codes))

    def __len__(self):
        return self.index.ntotal

    def all_ids(self) -> np.ndarray:
        return faiss_module().vector_to_array(self.index.id_map).astype(np.int64)

    def to_bytes(self):
        return faiss_module().serialize_index_binary(self.index).tobytes()

    def load_bytes(self, payload, extra):
        index = faiss_module().deserialize_index_binary(np.frombuffer(payload, dtype=np.uint8))
        self.index = faiss_module().IndexBinaryIDMap2(index) if not hasattr(index, "id_map") else index


class HammingFlatBackend(Backend):
    """Exact search with crossbit's own XOR+POPCNT kernel (:mod:`crossbit.indexer.hamming`):
    codes as uint64 words, word-major (one row per word) in a growable array, ids beside
    them by position."""

    kind = "flat"

    def __init__(self, bits: int, threads: int = 1):
        super().__init__(bits)
        self.words = -(-bits // 64)
        self.threads = threads
        self.n = 0
        self._codes = np.zeros((self.words, 1024), np.uint64)
        self._ids = np.zeros(1024, np.int64)

    def _grow(self, extra: int) -> None:
        need = self.n + extra
        if need <= len(self._ids):
            return
        cap = max(need, 2 * len(self._ids))
        codes = np.zeros((self.words, cap), np.uint64)
        codes[:, : self.n] = self._codes[:, : self.n]
        ids = np.zeros(cap, np.int64)
        ids[: self.n] = self._ids[: self.n]
        self._codes, self._ids = codes, ids

    def add(self, codes, ids):
        from crossbit.indexer.hamming import words

        self._grow(len(ids))
        self._codes[:, self.n : self.n + len(ids)] = words(codes).T
        self._ids[self.n : self.n + len(ids)] = ids
        self.n += len(ids)

    def remove(self, ids):
        keep = ~np.isin(self._ids[: self.n], np.asarray(ids, dtype=np.int64))
        kept = int(keep.sum())
        self._codes[:, :kept] = self._codes[:, : self.n][:, keep]
        self._ids[:kept] = self._ids[: self.n][keep]
        self.n = kept

    def search(self, codes, k, nprobe=None):
        from crossbit.indexer.hamming import top_k, words

        positions, distances = top_k(words(codes), self._codes, k, self.threads, self.n)
        ids = np.where(positions >= 0, self._ids[np.clip(positions, 0, None)], -1)
        return ids, distances

    def range_search(self, codes, radius):
        from crossbit.indexer.hamming import distances_to, words

        out = []
        for q in words(codes):
            d = distances_to(q, self._codes, self.n)
            hit = np.flatnonzero(d <= radius)
            ids = self._ids[hit]
            order = np.lexsort((ids, d[hit]))
            out.append((ids[order], d[hit][order].astype(np.int32)))
        return out

    def __len__(self):
        return self.n

    def all_ids(self):
        return self._ids[: self.n].copy()

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, packed uint8 codes) of every entry, in insertion order."""
        rows = np.ascontiguousarray(self._codes[:, : self.n].T)
        packed = rows.view(np.uint8).reshape(self.n, -1)[:, : self.bits // 8]
        return self._ids[: self.n].copy(), np.ascontiguousarray(packed)

    def params(self):
        from crossbit.indexer.hamming import HAVE_NUMBA

        return {"engine": "crossbit XOR+POPCNT" + ("" if HAVE_NUMBA else " (numpy: no numba)"),
                "threads": self.threads}

    def to_bytes(self):
        return self._ids[: self.n].tobytes() + \
            np.ascontiguousarray(self._codes[:, : self.n]).tobytes()

    def snapshot_extra(self):
        return {"engine": "crossbit-hamming", "layout": "word-major", "count": self.n,
                "words": self.words}

    def load_bytes(self, payload, extra):
        if extra.get("engine") != "crossbit-hamming":  # a FAISS flat snapshot of an older version
            old = FlatBackend(self.bits)
            old.load_bytes(payload, extra)
            ids = old.all_ids()
            codes = old.index.index.reconstruct_n(0, len(ids))
            self.n = 0
            self.add(np.asarray(codes, np.uint8).reshape(len(ids), self.bits // 8), ids)
            return
        n, w = int(extra["count"]), int(extra["words"])
        self.n = 0
        self._grow(n)
        self._ids[:n] = np.frombuffer(payload[: 8 * n], np.int64)
        self._codes[:, :n] = np.frombuffer(payload[8 * n :], np.uint64).reshape(w, n)
        self.n = n


def flat_backend(bits: int, engine: str = "crossbit") -> Backend:
    """The exact flat backend: crossbit's kernel, or FAISS ``IndexBinaryFlat`` (``faiss``).

    (:class:`BinaryIndex` drops the options of other kinds before it gets here.)
    """
    if engine == "faiss":
        return FlatBackend(bits)
    if engine != "crossbit":
        raise ValueError(f"flat engine must be 'crossbit' or 'faiss', got {engine!r}")
    return HammingFlatBackend(bits)


def make_backend(kind: str, bits: int, options: dict) -> Backend:
    """A backend by kind name (``auto`` resolved by the caller)."""
    if kind == "flat":
        return flat_backend(bits, **options)
    if kind in ("ivf", "hnsw"):
        from crossbit.indexer.backends_approx import HNSWBackend, IVFBackend

        return (IVFBackend if kind == "ivf" else HNSWBackend)(bits, **options)
    if kind == "gpu":
        from crossbit.indexer.backends_gpu import FaissGpuBackend, TorchHammingBackend

        if gpu_available():
            return FaissGpuBackend(bits, **options)
        if torch_cuda_available() or options.get("device") == "cpu":
            return TorchHammingBackend(bits, **options)
        raise ValueError("kind 'gpu' needs a GPU: faiss has no GPU support here and torch sees "
                         "no CUDA device; use 'flat', 'ivf' or 'hnsw'")
    raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")


KINDS = ("auto", "flat", "ivf", "hnsw", "gpu")  # the FAISS-backed kinds (milvus is its own index)
