"""crossbit's exact Hamming scan: XOR + POPCNT over 64-bit words, blocked over queries x codes,
with a top-k kept by insertion (no sort of the whole distance row). Compiled by numba once
and cached on disk; a pure numpy fallback keeps the same answers where numba is absent."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BLOCK = 512  # codes per block: 512 x 8 bytes stay in L1 while every query of the batch visits
NO_DISTANCE = np.iinfo(np.int32).max

try:  # numba is a dependency; the fallback is for a checkout without it
    from numba import njit, types
    from numba.extending import intrinsic

    @intrinsic
    def _popcount(typingctx, x):
        """LLVM's ctpop: one POPCNT instruction on x86-64."""
        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])
        return types.uint64(types.uint64), codegen

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False


def words(codes: np.ndarray) -> np.ndarray:
    """Packed uint8 codes (n, bytes) as uint64 words (n, ceil(bytes / 8)), zero-padded.

    Padding both sides with the same zeros leaves every Hamming distance as it was.
    """
    n, width = codes.shape
    padded = -(-width // 8) * 8
    if padded != width:
        codes = np.concatenate([codes, np.zeros((n, padded - width), np.uint8)], axis=1)
    return np.ascontiguousarray(codes).view(np.uint64).reshape(n, padded // 8)


if HAVE_NUMBA:
    @njit(cache=True, nogil=True, boundscheck=False)
    def _scan(q, db, start, stop, out_d, out_i):  # pragma: no cover - compiled
        """Top-k (by distance, then position) of codes start..stop for each query, merged into
        out_d/out_i (sorted, k columns, pre-filled with the candidates so far).

        ``db`` is word-major (w, n): each word of every code in one contiguous row, so the
        distance loop over a block is plain XOR + POPCNT that LLVM vectorizes (VPOPCNTQ with
        AVX-512, a shuffle-based popcount with AVX2); a block whose nearest code cannot enter
        the top-k is skipped after one vectorized minimum, so the insertion runs rarely.
        """
        nq, w = q.shape
        k = out_d.shape[1]
        buf = np.empty(BLOCK, np.int32)
        for b0 in range(start, stop, BLOCK):
            m = min(BLOCK, stop - b0)
            for qi in range(nq):
                seg = db[0, b0:b0 + m]
                x = q[qi, 0]
                for jj in range(m):
                    buf[jj] = np.int32(_popcount(x ^ seg[jj]))
                for t in range(1, w):
                    seg = db[t, b0:b0 + m]
                    x = q[qi, t]
                    for jj in range(m):
                        buf[jj] += np.int32(_popcount(x ^ seg[jj]))
                worst = out_d[qi, k - 1]
                lo = worst
                for jj in range(m):
                    lo = min(lo, buf[jj])
                if lo >= worst:
                    continue
                for jj in range(m):
                    d = buf[jj]
                    if d < worst:
                        pos = k - 1
                        while pos > 0 and out_d[qi, pos - 1] > d:
                            out_d[qi, pos] = out_d[qi, pos - 1]
                            out_i[qi, pos] = out_i[qi, pos - 1]
                            pos -= 1
                        out_d[qi, pos] = d
                        out_i[qi, pos] = b0 + jj
                        worst = out_d[qi, k - 1]

    @njit(cache=True, nogil=True, boundscheck=False)
    def _distances(q, db, n, out):  # pragma: no cover - compiled
        """Every distance of one query (w words) to the first n codes of db (w, n)."""
        for j in range(n):
            out[j] = 0
        for t in range(q.shape[0]):
            x = q[t]
            row = db[t, :n]
            for j in range(n):
                out[j] += np.int32(_popcount(x ^ row[j]))

    @njit(cache=True, nogil=True, boundscheck=False)
    def _checksum(q, db, start, stop):  # pragma: no cover - compiled
        """The sum of every distance: the XOR+POPCNT loop alone, the floor a top-k scan nears."""
        total = 0
        nq, w = q.shape
        for b0 in range(start, stop, BLOCK):
            m = min(BLOCK, stop - b0)
            for qi in range(nq):
                for t in range(w):
                    seg = db[t, b0:b0 + m]
                    x = q[qi, t]
                    for jj in range(m):
                        total += _popcount(x ^ seg[jj])
        return total


def _scan_numpy(q, db, start, stop, out_d, out_i):
    """The same answer as the compiled scan, in numpy (slow; no numba)."""
    d = np.bitwise_count(q[:, None, :] ^ db[:, start:stop].T[None]).sum(axis=2).astype(np.int32)
    pos = np.arange(start, stop, dtype=np.int64)
    for qi in range(len(q)):
        cand_d = np.concatenate([out_d[qi], d[qi]])
        cand_i = np.concatenate([out_i[qi], pos])
        order = np.lexsort((np.where(cand_i < 0, np.iinfo(np.int64).max, cand_i), cand_d))
        k = out_d.shape[1]
        out_d[qi], out_i[qi] = cand_d[order[:k]], cand_i[order[:k]]


def top_k(queries: np.ndarray, db: np.ndarray, k: int, threads: int = 1,
          n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``db[:n]`` for each query, as (positions, distances).

    Args:
        queries: uint64 words (nq, w) (see :func:`words`).
        db: the codes word-major, uint64 (w, >= n).
        k: neighbours per query; rows past the codes there are pad with position -1.
        threads: code ranges scanned side by side (numba releases the GIL), then merged.

    Returns:
        int64 positions (nq, k) and int32 distances (nq, k), nearest first, ties in
        position order.
    """
    n = db.shape[1] if n is None else n
    nq = len(queries)
    scan = _scan if HAVE_NUMBA else _scan_numpy
    threads = max(1, min(threads, n // (4 * BLOCK) or 1))
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    parts = [(np.full((nq, k), NO_DISTANCE, np.int32), np.full((nq, k), -1, np.int64))
             for _ in range(threads)]
    if threads == 1:
        scan(queries, db, 0, n, *parts[0])
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda t: scan(queries, db, int(bounds[t]), int(bounds[t + 1]),
                                         *parts[t]), range(threads)))
    if threads == 1:
        return parts[0][1], parts[0][0]
    d = np.concatenate([p[0] for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), d), axis=1)[:, :k]
    return np.take_along_axis(i, order, axis=1), np.take_along_axis(d, order, axis=1)


def distances_to(query: np.ndarray, db: np.ndarray, n: int) -> np.ndarray:
    """int32 distances of one query (uint64 words) to the first n codes of ``db`` (w, n)."""
    if not HAVE_NUMBA:
        return np.bitwise_count(db[:, :n].T ^ query[None, :]).sum(axis=1).astype(np.int32)
    out = np.empty(n, np.int32)
    _distances(query, db, n, out)
    return out


def scan_floor(queries: np.ndarray, db: np.ndarray, start: int = 0, stop: int | None = None) -> int:
    """Sum of all distances (the XOR+POPCNT loop alone): a benchmark's reference floor."""
    stop = db.shape[1] if stop is None else stop
    if not HAVE_NUMBA:
        return int(np.bitwise_count(queries[:, None, :] ^ db[:, start:stop].T[None]).sum())
    return int(_checksum(queries, db, start, stop))


def word_major(codes: np.ndarray) -> np.ndarray:
    """Packed uint8 codes (n, bytes) as the kernel's word-major uint64 (w, n)."""
    return np.ascontiguousarray(words(codes).T)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
