"""Approximate backends: FAISS ``IndexBinaryIVF`` (exact until trained, retrained as it grows) and HNSW."""

from __future__ import annotations

import logging
import math

import numpy as np

from crossbit.indexer.backends import Backend, HammingFlatBackend, faiss_module, range_lists

log = logging.getLogger(__name__)


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
        faiss = faiss_module()
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

    def retrained(self, ids: np.ndarray, codes: np.ndarray) -> IVFBackend:
        """A new backend with these settings, trained on all the given codes (the caller
        reads them from the store); this one is left as it is, still searchable."""
        fresh = IVFBackend(self.bits, self.train_size, self.default_nprobe, self.fixed_nlist,
                           self.retrain_factor)
        fresh._train(ids, codes)
        return fresh

    def remove(self, ids):
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.ivf is None:
            self.flat.remove(ids)
        else:
            self.ivf.remove_ids(ids)

    def search(self, codes, k, nprobe=None):
        if self.ivf is None:
            return self.flat.search(codes, k)
        params = faiss_module().SearchParametersIVF(nprobe=int(nprobe or self.default_nprobe))
        distances, labels = self.ivf.search(codes, k, params=params)
        return labels, distances

    def range_search(self, codes, radius):
        if self.ivf is None:
            return self.flat.range_search(codes, radius)
        lims, distances, labels = self.ivf.range_search(codes, radius + 1)
        return range_lists(lims, distances, labels, len(codes))

    def __len__(self):
        return len(self.flat) if self.ivf is None else self.ivf.ntotal

    def all_ids(self):
        if self.ivf is None:
            return self.flat.all_ids()
        faiss, invlists = faiss_module(), self.ivf.invlists
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
        return faiss_module().serialize_index_binary(self.ivf).tobytes()

    def snapshot_extra(self):
        flat = self.flat.snapshot_extra() if self.ivf is None else {}
        return {**flat, "trained_at": self.trained_at, "ivf": self.ivf is not None}

    def load_bytes(self, payload, extra):
        if extra.get("ivf"):
            self.ivf = faiss_module().deserialize_index_binary(np.frombuffer(payload, dtype=np.uint8))
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
        faiss = faiss_module()
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
        if not self.position:  # nothing live (never added, or every item removed)
            return (np.full((len(codes), k), -1, np.int64),
                    np.full((len(codes), k), np.iinfo(np.int32).max, np.int32))
        extra = min(self.removed, 4 * k)
        kk = min(k + extra, max(1, len(self.labels)))
        params = faiss_module().SearchParametersHNSW(efSearch=max(self.ef_search, kk))
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
        if not self.position:
            return [(np.zeros(0, np.int64), np.zeros(0, np.int32)) for _ in range(len(codes))]
        ids, distances = self.search(codes, min(len(self), 1024))
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
        return faiss_module().serialize_index_binary(self.index).tobytes()

    def snapshot_extra(self):
        return {"labels": self.labels.tolist()}

    def load_bytes(self, payload, extra):
        self.index = faiss_module().deserialize_index_binary(np.frombuffer(payload, dtype=np.uint8))
        self.index.hnsw.efSearch = self.ef_search
        self.labels = np.array(extra["labels"], dtype=np.int64)
        self.position = {int(i): p for p, i in enumerate(self.labels) if i >= 0}
        self.removed = int((self.labels < 0).sum())
