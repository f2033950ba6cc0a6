"""crossbit.indexer: durable binary indexes of every kind behind one contract; ``open_index`` opens one.

FAISS and pymilvus load only when an index of their kind opens.
"""

from __future__ import annotations

import os

from crossbit.indexer.interface import Index, ModelMismatch, Reranked, Results

FAISS_KINDS = ("auto", "flat", "ivf", "hnsw", "gpu")  # crossbit.indexer.index.BinaryIndex
KINDS = (*FAISS_KINDS, "milvus")


def open_index(directory: str | os.PathLike, bits: int, kind: str = "auto", **options) -> Index:
    """Open (or create) a binary index in ``directory``.

    Args:
        directory: where the SQLite store and the snapshot live (or, for milvus-lite, the
            database file).
        bits: code length (a multiple of 8).
        kind: ``flat``, ``ivf``, ``hnsw``, ``gpu``, ``milvus`` or ``auto`` (GPU flat with a
            GPU, else exact flat with crossbit's kernel).
        **options: ``threads`` (OpenMP threads per call), ``snapshot_interval`` (seconds),
            ``synchronous`` (SQLite), and backend options (ivf: ``train_size``, ``nprobe``,
            ``nlist``; hnsw: ``m``, ``ef_search``; gpu: ``device``; milvus: ``uri``...).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
    if kind == "milvus":
        from crossbit.indexer.milvus import MilvusIndex

        return MilvusIndex(directory, bits, **options)
    from crossbit.indexer.index import BinaryIndex

    return BinaryIndex(directory, bits, kind, **options)


__all__ = ["Index", "KINDS", "ModelMismatch", "Reranked", "Results", "open_index"]
