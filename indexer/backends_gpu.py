"""GPU backends: FAISS ``GpuIndexBinaryFlat`` where faiss has GPU support, else a torch Hamming kernel."""

from __future__ import annotations

import logging

import numpy as np

from crossbit.indexer.backends import GPU_MAX_K, Backend, faiss_module

log = logging.getLogger(__name__)


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
        faiss = faiss_module()
        self.resources = faiss.StandardGpuResources()
        self.device = device
        self._device_reset()

    def _device_reset(self):
        faiss = faiss_module()
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
