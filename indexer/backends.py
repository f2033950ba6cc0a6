"""In-memory search backends over packed binary codes: FAISS flat, IVF, HNSW, GPU flat, torch Hamming."""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

log = logging.getLogger(__name__)

GPU_MAX_K = 2048  # faiss GPU k-selection limit


def _faiss():
    import faiss

    return faiss


_thread_state = threading.local()


def set_thread_omp(threads: int | None) -> None:
    """Set FAISS's OpenMP threads for the calling thread (an OpenMP setting is per thread)."""
    if threads and getattr(_thread_state, "omp", None) != threads:
        _faiss().omp_set_num_threads(threads)
        _thread_state.omp = threads


def gpu_available() -> bool:
    """True when faiss was built with GPU support and sees a GPU (never touches a GPU class otherwise)."""
    faiss = _faiss()
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


def _range_lists(lims, distances, labels, nq):
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
        faiss = _faiss()
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
        return _range_lists(lims, distances, labels, len(codes))

    def __len__(self):
        return self.index.ntotal

    def all_ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    def to_bytes(self):
        return _faiss().serialize_index_binary(self.index).tobytes()

    def load_bytes(self, payload, extra):
        index = _faiss().deserialize_index_binary(np.frombuffer(payload, dtype=np.uint8))
        self.index = _faiss().IndexBinaryIDMap2(index) if not hasattr(index, "id_map") else index


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


def nlist_for(n: int) -> int:
    """IVF lists for n codes: about 4 * sqrt(n), a power of two, between 16 and 65536."""
    return int(min(65536, max(16, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))))))


class IVFBackend(Backend):
    """``IndexBinaryIVF``: exact (a flat index) until ``train_size`` codes, then trained once.

    nlist is chosen from the data size when it trains; when the index has grown
    ``retrain_factor`` times past that size it trains again on the larger data.
    """

    kind = "ivf"

    def __init__(self, bits: int, train_size: int = 50_000, nprobe: int = 16,
                 nlist: int | None = None, retrain_factor: float = 8.0):
        super().__init__(bits)
        self.train_size = int(train_size)
        self.default_nprobe = int(nprobe)
        self.fixed_nlist = nlist
        self.retrain_factor = retrain_factor
        self.trained_at = 0
        self.flat = HammingFlatBackend(bits)
        self.ivf = None

    @property
    def exact(self):
        return self.ivf is None

    def _train(self, ids, codes):
        faiss = _faiss()
        nlist = self.fixed_nlist or nlist_for(len(codes))
        nlist = min(nlist, max(1, len(codes) // 39))
        ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(self.bits), self.bits, nlist)
        ivf.nprobe = self.default_nprobe
        sample = codes
        if len(codes) > 64 * nlist:  # FAISS asks 39..256 per list; 64 keeps training short
            pick = np.random.default_rng(0).choice(len(codes), 64 * nlist, replace=False)
            sample = codes[np.sort(pick)]
        ivf.train(sample)
        ivf.add_with_ids(codes, ids)
        log.info("ivf: trained nlist=%d on %d codes", nlist, len(sample))
        self.ivf, self.trained_at = ivf, len(codes)

    def _flat_contents(self) -> tuple[np.ndarray, np.ndarray]:
        return self.flat.contents()

    def add(self, codes, ids):
        if self.ivf is None:
            self.flat.add(codes, ids)
            if len(self.flat) >= self.train_size:
                all_ids, all_codes = self._flat_contents()
                self._train(all_ids, all_codes)
                self.flat = HammingFlatBackend(self.bits)
            return
        self.ivf.add_with_ids(codes, ids)

    def needs_retrain(self) -> bool:
        return self.ivf is not None and self.fixed_nlist is None and \
            self.ivf.ntotal > self.retrain_factor * self.trained_at

    def retrain(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Train again on all the given codes (the caller reads them from the store)."""
        self._train(ids, codes)

    def remove(self, ids):
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.ivf is None:
            self.flat.remove(ids)
        else:
            self.ivf.remove_ids(ids)

    def search(self, codes, k, nprobe=None):
        if self.ivf is None:
            return self.flat.search(codes, k)
        params = _faiss().SearchParametersIVF(nprobe=int(nprobe or self.default_nprobe))
        distances, labels = self.ivf.search(codes, k, params=params)
        return labels, distances

    def range_search(self, codes, radius):
        if self.ivf is None:
            return self.flat.range_search(codes, radius)
        lims, distances, labels = self.ivf.range_search(codes, radius + 1)
        return _range_lists(lims, distances, labels, len(codes))

    def __len__(self):
        return len(self.flat) if self.ivf is None else self.ivf.ntotal

    def all_ids(self):
        if self.ivf is None:
            return self.flat.all_ids()
        faiss, invlists = _faiss(), self.ivf.invlists
        parts = [np.asarray(faiss.rev_swig_ptr(invlists.get_ids(lst), size), dtype=np.int64).copy()
                 for lst in range(self.ivf.nlist) if (size := invlists.list_size(lst))]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def params(self):
        if self.ivf is None:
            return {"trained": False, "train_size": self.train_size,
                    "note": "exact flat search until train_size codes"}
        return {"trained": True, "nlist": int(self.ivf.nlist), "nprobe": self.default_nprobe,
                "trained_at": self.trained_at}

    def to_bytes(self):
        if self.ivf is None:
            return self.flat.to_bytes()
        return _faiss().serialize_index_binary(self.ivf).tobytes()

    def snapshot_extra(self):
        flat = self.flat.snapshot_extra() if self.ivf is None else {}
        return {**flat, "trained_at": self.trained_at, "ivf": self.ivf is not None}

    def load_bytes(self, payload, extra):
        if extra.get("ivf"):
            self.ivf = _faiss().deserialize_index_binary(np.frombuffer(payload, dtype=np.uint8))
            self.ivf.nprobe = self.default_nprobe
            self.trained_at = int(extra.get("trained_at", self.ivf.ntotal))
        else:
            self.flat.load_bytes(payload, extra)


class HNSWBackend(Backend):
    """``IndexBinaryHNSW`` with its own label -> id map; removals are tombstones, rebuilt past 20%."""

    kind = "hnsw"
    exact = False

    def __init__(self, bits: int, m: int = 16, ef_search: int = 64, ef_construction: int = 40):
        super().__init__(bits)
        self.m, self.ef_search, self.ef_construction = m, ef_search, ef_construction
        self._reset()

    def _reset(self):
        faiss = _faiss()
        self.index = faiss.IndexBinaryHNSW(self.bits, self.m)
        self.index.hnsw.efConstruction = self.ef_construction
        self.index.hnsw.efSearch = self.ef_search
        self.labels = np.zeros(0, dtype=np.int64)  # label (insertion position) -> id, -1 if removed
        self.position: dict[int, int] = {}
        self.removed = 0

    def add(self, codes, ids):
        base = len(self.labels)
        self.index.add(codes)
        self.labels = np.concatenate([self.labels, ids.astype(np.int64)])
        for n, i in enumerate(ids):
            self.position[int(i)] = base + n

    def remove(self, ids):
        for i in ids:
            pos = self.position.pop(int(i), None)
            if pos is not None:
                self.labels[pos] = -1
                self.removed += 1
        if self.removed > 0.2 * max(1, len(self.labels)):
            self._rebuild()

    def _rebuild(self):
        live = np.flatnonzero(self.labels >= 0)
        codes = np.vstack([self.index.reconstruct(int(p)) for p in live]) if len(live) else \
            np.zeros((0, self.bits // 8), np.uint8)
        ids = self.labels[live]
        self._reset()
        if len(ids):
            self.add(codes.astype(np.uint8), ids)

    def search(self, codes, k, nprobe=None):
        extra = min(self.removed, 4 * k)
        kk = min(k + extra, max(1, len(self.labels)))
        params = _faiss().SearchParametersHNSW(efSearch=max(self.ef_search, kk))
        distances, labels = self.index.search(codes, kk, params=params)
        ids = np.where(labels >= 0, self.labels[np.clip(labels, 0, None)], -1)
        out_ids = np.full((len(codes), k), -1, dtype=np.int64)
        out_d = np.full((len(codes), k), np.iinfo(np.int32).max, dtype=np.int32)
        for q in range(len(codes)):
            keep = ids[q] >= 0
            got_i, got_d = ids[q][keep][:k], distances[q][keep][:k]
            out_ids[q, : len(got_i)] = got_i
            out_d[q, : len(got_d)] = got_d
        return out_ids, out_d

    def range_search(self, codes, radius):
        k = min(len(self), 1024)
        ids, distances = self.search(codes, max(k, 1))
        return [(i[(i >= 0) & (d <= radius)], d[(i >= 0) & (d <= radius)])
                for i, d in zip(ids, distances)]

    def __len__(self):
        return len(self.position)

    def contains(self, ids):
        return np.array([int(i) in self.position for i in ids], dtype=bool)

    def all_ids(self):
        return self.labels[self.labels >= 0].copy()

    def params(self):
        return {"M": self.m, "efSearch": self.ef_search, "efConstruction": self.ef_construction,
                "tombstones": self.removed, "range_search": "approximate (top 1024, filtered)"}

    def to_bytes(self):
        return _faiss().serialize_index_binary(self.index).tobytes()

    def snapshot_extra(self):
        return {"labels": self.labels.tolist()}

    def load_bytes(self, payload, extra):
        self.index = _faiss().deserialize_index_binary(np.frombuffer(payload, dtype=np.uint8))
        self.index.hnsw.efSearch = self.ef_search
        self.labels = np.array(extra["labels"], dtype=np.int64)
        self.position = {int(i): p for p, i in enumerate(self.labels) if i >= 0}
        self.removed = int((self.labels < 0).sum())


class _PositionalBackend(Backend):
    """Shared id bookkeeping for backends that store codes by position (GPU flat, torch)."""

    def __init__(self, bits: int):
        super().__init__(bits)
        self.ids = np.zeros(0, dtype=np.int64)
        self.codes = np.zeros((0, bits // 8), dtype=np.uint8)  # host copy: rebuilds and snapshots

    def add(self, codes, ids):
        self.ids = np.concatenate([self.ids, ids.astype(np.int64)])
        self.codes = np.concatenate([self.codes, codes])
        self._device_add(codes)

    def remove(self, ids):
        keep = ~np.isin(self.ids, np.asarray(ids, dtype=np.int64))
        self.ids, self.codes = self.ids[keep], self.codes[keep]
        self._device_reset()
        if len(self.codes):
            self._device_add(self.codes)

    def search(self, codes, k, nprobe=None):
        if k > self.max_k:
            raise ValueError(f"k={k} is above this backend's limit of {self.max_k}")
        if len(self.ids) == 0:
            return (np.full((len(codes), k), -1, np.int64),
                    np.full((len(codes), k), np.iinfo(np.int32).max, np.int32))
        positions, distances = self._device_search(codes, min(k, len(self.ids)))
        ids = np.where(positions >= 0, self.ids[np.clip(positions, 0, None)], -1)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            distances = np.pad(distances, ((0, 0), (0, pad)),
                               constant_values=np.iinfo(np.int32).max)
        return ids, distances.astype(np.int32)

    def range_search(self, codes, radius):
        return _popcount_range(codes, self.codes, self.ids, radius)

    def __len__(self):
        return len(self.ids)

    def contains(self, ids):
        return np.isin(np.asarray(ids, dtype=np.int64), self.ids)

    def all_ids(self):
        return self.ids.copy()

    def to_bytes(self):
        return self.ids.tobytes() + self.codes.tobytes()

    def load_bytes(self, payload, extra):
        n = int(extra["count"])
        self.ids = np.frombuffer(payload[: 8 * n], dtype=np.int64).copy()
        self.codes = np.frombuffer(payload[8 * n :], dtype=np.uint8).reshape(n, self.bits // 8).copy()
        self._device_reset()
        if n:
            self._device_add(self.codes)

    def snapshot_extra(self):
        return {"count": int(len(self.ids))}


def _popcount_range(codes: np.ndarray, stored: np.ndarray, ids: np.ndarray, radius: int):
    out = []
    for q in codes:
        d = np.bitwise_count(np.bitwise_xor(stored, q[None, :])).sum(axis=1, dtype=np.int32)
        hit = np.flatnonzero(d <= radius)
        order = np.lexsort((ids[hit], d[hit]))
        out.append((ids[hit][order], d[hit][order]))
    return out


class FaissGpuBackend(_PositionalBackend):
    """``GpuIndexBinaryFlat`` (faiss built with GPU support); ids mapped on the CPU side."""

    kind = "gpu"
    max_k = GPU_MAX_K

    def __init__(self, bits: int, device: int = 0):
        super().__init__(bits)
        faiss = _faiss()
        self.resources = faiss.StandardGpuResources()
        self.device = device
        self._device_reset()

    def _device_reset(self):
        faiss = _faiss()
        config = faiss.GpuIndexBinaryFlatConfig()
        config.device = self.device
        self.index = faiss.GpuIndexBinaryFlat(self.resources, self.bits, config)

    def _device_add(self, codes):
        self.index.add(codes)

    def _device_search(self, codes, k):
        distances, positions = self.index.search(codes, k)
        return positions, distances

    def params(self):
        return {"engine": "faiss GpuIndexBinaryFlat", "device": self.device, "max_k": self.max_k}


class TorchHammingBackend(_PositionalBackend):
    """Exact Hamming search as a matrix product of +-1 codes in torch (CUDA, or the CPU for tests).

    distance = (bits - <a, b>) / 2 for a, b in {-1, +1}^bits; the product is exact in
    float16 inputs with float32 accumulation. Used for ``gpu`` when faiss has no GPU support.
    """

    kind = "gpu"
    max_k = GPU_MAX_K

    def __init__(self, bits: int, device: str | None = None, chunk: int = 1 << 20):
        super().__init__(bits)
        import torch

        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.chunk = chunk
        self._device_reset()

    def _signs(self, codes: np.ndarray):
        torch = self.torch
        bits = torch.from_numpy(np.unpackbits(codes, axis=1)).to(self.device)
        return bits.to(self.dtype) * 2 - 1

    def _device_reset(self):
        self.matrix = self.torch.zeros((0, self.bits), dtype=self.dtype, device=self.device)

    def _device_add(self, codes):
        self.matrix = self.torch.cat([self.matrix, self._signs(codes)])

    def _device_search(self, codes, k):
        torch = self.torch
        q = self._signs(codes)
        best_d, best_p = None, None
        for start in range(0, len(self.matrix), self.chunk):
            block = self.matrix[start : start + self.chunk]
            dist = (self.bits - (q @ block.T).float()) * 0.5
            kk = min(k, len(block))
            d, p = torch.topk(dist, kk, dim=1, largest=False, sorted=True)
            p = p + start
            if best_d is None:
                best_d, best_p = d, p
            else:
                d = torch.cat([best_d, d], dim=1)
                p = torch.cat([best_p, p], dim=1)
                best_d, order = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False, sorted=True)
                best_p = torch.gather(p, 1, order)
        # equal distances: order by position (insertion order), like faiss's flat scan
        d = best_d.round().to(torch.int64)
        key = d * (len(self.matrix) + 1) + best_p
        key, order = torch.sort(key, dim=1)
        return torch.gather(best_p, 1, order).cpu().numpy(), \
            torch.gather(d, 1, order).cpu().numpy().astype(np.int32)

    def params(self):
        return {"engine": "torch +-1 matmul", "device": str(self.device), "max_k": self.max_k}


def make_backend(kind: str, bits: int, options: dict) -> Backend:
    """A backend by kind name (``auto`` resolved by the caller)."""
    if kind == "flat":
        return flat_backend(bits, **options)
    if kind == "ivf":
        return IVFBackend(bits, **options)
    if kind == "hnsw":
        return HNSWBackend(bits, **options)
    if kind == "gpu":
        if gpu_available():
            return FaissGpuBackend(bits, **options)
        if torch_cuda_available() or options.get("device") == "cpu":
            return TorchHammingBackend(bits, **options)
        raise ValueError("kind 'gpu' needs a GPU: faiss has no GPU support here and torch sees "
                         "no CUDA device; use 'flat', 'ivf' or 'hnsw'")
    raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")


KINDS = ("auto", "flat", "ivf", "hnsw", "gpu", "milvus")
