"""Binary codes: bit-length checks, sign packing in FAISS's layout, Hamming distances, Encoded."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SUPPORTED_BITS = (16, 32, 64, 128, 256)


class Encoded(NamedTuple):
    """Codes (uint8, (n, bits // 8), FAISS layout) and float embeddings (float32, (n, d))."""

    codes: np.ndarray
    embeddings: np.ndarray


def validate_bits(bits: int) -> int:
    """Check a code length and return it.

    Args:
        bits: requested code length in bits.

    Returns:
        ``bits`` unchanged.

    Raises:
        ValueError: when ``bits`` is not a positive multiple of 8 or not supported.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    if bits <= 0 or bits % 8:
        raise ValueError(f"code length must be a positive multiple of 8 bits, got {bits}")
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"code length {bits} is not supported; choose one of {SUPPORTED_BITS}")
    return int(bits)


def pack_signs(values: np.ndarray) -> np.ndarray:
    """Turn real values into packed codes: bit = 1 where value > 0.

    The first dimension becomes the most significant bit of the first byte
    (``np.packbits`` order), the layout FAISS binary indexes take.

    Args:
        values: float array of shape (n, bits), bits a multiple of 8.

    Returns:
        uint8 array of shape (n, bits // 8).
    """
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] % 8:
        raise ValueError(f"expected shape (n, bits) with bits a multiple of 8, got {values.shape}")
    return np.packbits(values > 0, axis=1)


def unpack_codes(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_signs`: packed uint8 rows to a {-1, +1} float32 matrix."""
    codes = np.asarray(codes, dtype=np.uint8)
    return np.unpackbits(codes, axis=1).astype(np.float32) * 2.0 - 1.0


def hamming_matrix(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances between two sets of packed codes (a popcount reference).

    Returns:
        int32 array of shape (len(queries), len(items)).
    """
    queries = np.ascontiguousarray(queries, dtype=np.uint8)
    items = np.ascontiguousarray(items, dtype=np.uint8)
    if queries.shape[1] != items.shape[1]:
        raise ValueError(f"code widths differ: {queries.shape[1]} vs {items.shape[1]} bytes")
    out = np.empty((len(queries), len(items)), dtype=np.int32)
    step = max(1, 2_000_000 // max(1, items.size))
    for start in range(0, len(queries), step):
        x = np.bitwise_xor(queries[start : start + step, None, :], items[None, :, :])
        out[start : start + step] = np.bitwise_count(x).sum(axis=2, dtype=np.int32)
    return out
