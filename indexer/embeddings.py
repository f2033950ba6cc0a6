"""Every item's float embedding in memory (unit length, float16) for re-ranking without I/O."""

from __future__ import annotations

import numpy as np

MERGE_AT = 50_000  # pending ids folded into the sorted arrays past this many


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (all-zero rows stay zero), float32."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class EmbeddingTable:
    """Unit-length float16 vectors by int64 id, gathered for a whole batch of shortlists at once.

    Ids live in a sorted array (looked up with ``searchsorted``) plus a small dict of
    recent additions that is merged in past :data:`MERGE_AT`, so adds never copy the
    vectors and lookups stay vectorised. The width is fixed by the first vector stored;
    vectors of another width are kept out (they score as missing when re-ranking).
    Not thread-safe: the index calls it under its read/write lock.
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self._vecs = np.zeros((0, dim or 0), np.float16)
        self._used = 0
        self._free: list[int] = []
        self._ids = np.zeros(0, np.int64)  # sorted
        self._rows = np.zeros(0, np.int64)  # row of each sorted id; -1 once removed
        self._pending: dict[int, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return int(self._vecs.nbytes + self._ids.nbytes + self._rows.nbytes)

    @classmethod
    def from_blobs(cls, chunks) -> EmbeddingTable:
        """A table from (ids, float32 blobs) chunks in ascending id order (the store's).

        The width is the first blob's; blobs of another width are left out.
        """
        table = cls()
        ids, parts = [], []
        for chunk_ids, blobs in chunks:
            if table.dim is None and blobs:
                table.dim = len(blobs[0]) // 4
            width = 4 * (table.dim or 0)
            keep = [j for j, blob in enumerate(blobs) if len(blob) == width]
            if not keep:
                continue
            ids.append(np.asarray([chunk_ids[j] for j in keep], np.int64))
            vectors = np.frombuffer(b"".join(blobs[j] for j in keep), np.float32)
            parts.append(unit_rows(vectors.reshape(len(keep), table.dim)).astype(np.float16))
        if ids:
            table._ids = np.concatenate(ids)
            table._vecs = np.concatenate(parts)
            table._used = table._size = len(table._ids)
            table._rows = np.arange(table._used, dtype=np.int64)
        return table

    # -- writes ---------------------------------------------------------------------------
    def put(self, ids: np.ndarray, vectors: np.ndarray | None) -> None:
        """Store (or replace) the vectors of ``ids``; ``None`` drops any vector they had."""
        ids = np.asarray(ids, np.int64).ravel()
        if vectors is None or len(ids) == 0:
            self.remove(ids)
            return
        vectors = np.asarray(vectors, np.float32)
        if self.dim is None:
            self.dim = vectors.shape[1]
            self._vecs = np.zeros((0, self.dim), np.float16)
        if vectors.shape[1] != self.dim:
            self.remove(ids)
            return
        unit = unit_rows(vectors).astype(np.float16)
        pos, hit = self._find(ids)
        for j, item in enumerate(ids.tolist()):
            row = -1
            if hit[j]:
                row = int(self._rows[pos[j]])
            elif item in self._pending:
                row = self._pending[item]
            if row < 0:
                row = self._allocate()
                self._size += 1
                if hit[j]:
                    self._rows[pos[j]] = row
                else:
                    self._pending[item] = row
            self._vecs[row] = unit[j]
        if len(self._pending) > MERGE_AT:
            self._merge()

    def remove(self, ids: np.ndarray) -> None:
        """Drop the vectors of ``ids`` (unknown ids are ignored)."""
        ids = np.asarray(ids, np.int64).ravel()
        if not len(ids):
            return
        pos, hit = self._find(ids)
        for j, item in enumerate(ids.tolist()):
            row = int(self._rows[pos[j]]) if hit[j] else self._pending.pop(item, -1)
            if hit[j]:
                self._rows[pos[j]] = -1
            if row >= 0:
                self._free.append(row)
                self._size -= 1

    def _allocate(self) -> int:
        if self._free:
            return self._free.pop()
        if self._used == len(self._vecs):
            grown = np.zeros((max(1024, 2 * len(self._vecs)), self.dim), np.float16)
            grown[: self._used] = self._vecs[: self._used]
            self._vecs = grown
        self._used += 1
        return self._used - 1

    def _merge(self) -> None:
        keep = self._rows >= 0
        ids = np.concatenate([self._ids[keep], np.fromiter(self._pending, np.int64)])
        rows = np.concatenate([self._rows[keep],
                               np.fromiter(self._pending.values(), np.int64)])
        order = np.argsort(ids, kind="stable")
        self._ids, self._rows = ids[order], rows[order]
        self._pending = {}

    # -- reads ----------------------------------------------------------------------------
    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions in the sorted arrays and whether each id is there (removed ones count)."""
        if not len(self._ids):
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        return pos, self._ids[pos] == ids

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The row of each id (any shape), -1 where it has no vector."""
        ids = np.asarray(ids, np.int64)
        flat = ids.ravel()
        pos, hit = self._find(flat)
        rows = np.where(hit, self._rows[pos] if len(self._rows) else -1, -1)
        if self._pending:
            for j in np.flatnonzero(rows < 0):
                rows[j] = self._pending.get(int(flat[j]), -1)
        return rows.reshape(ids.shape)

    def gather(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors as float32 of shape ids.shape + (dim,), found mask of ids.shape)."""
        rows = self.rows(ids)
        found = rows >= 0
        if self.dim is None:
            return np.zeros(rows.shape + (0,), np.float32), found
        vectors = self._vecs[np.where(found, rows, 0)].astype(np.float32)
        vectors[~found] = 0.0
        return vectors, found

    def get(self, item_id: int) -> np.ndarray | None:
        """One id's unit vector as float32, or None."""
        row = int(self.rows(np.array([item_id]))[0])
        return None if row < 0 else self._vecs[row].astype(np.float32)
