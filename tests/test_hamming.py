"""crossbit's exact Hamming kernel against a popcount brute force: random and adversarial codes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossbit.indexer.backends import HammingFlatBackend
from crossbit.indexer.hamming import HAVE_NUMBA, top_k, word_major, words

from helpers import popcount_distances


def reference(queries: np.ndarray, codes: np.ndarray, k: int):
    """Sorted by (distance, position); -1 / max distance where fewer than k codes exist."""
    d = popcount_distances(queries, codes) if len(codes) else np.zeros((len(queries), 0), int)
    out_i = np.full((len(queries), k), -1, np.int64)
    out_d = np.full((len(queries), k), np.iinfo(np.int32).max, np.int64)
    for q in range(len(queries)):
        order = np.lexsort((np.arange(len(codes)), d[q]))[:k]
        out_i[q, : len(order)] = order
        out_d[q, : len(order)] = d[q][order]
    return out_i, out_d


def test_numba_is_there():
    assert HAVE_NUMBA, "numba is a dependency: the kernel should be compiled, not numpy"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(bits=st.sampled_from([16, 24, 32, 64, 72, 128, 200, 256]), n=st.integers(0, 3000),
       nq=st.integers(1, 9), k=st.integers(1, 40), threads=st.integers(1, 3),
       values=st.sampled_from([256, 2, 1]), seed=st.integers(0, 2**16))
def test_top_k_matches_brute_force(bits, n, nq, k, threads, values, seed):
    """values=2: codes of 0x00/0x01 bytes (many ties); 1: all zero (every distance ties)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, values, size=(n, bits // 8), dtype=np.uint8)
    queries = rng.integers(0, values, size=(nq, bits // 8), dtype=np.uint8)
    positions, distances = top_k(words(queries), word_major(codes), k, threads)
    want_i, want_d = reference(queries, codes, k)
    assert np.array_equal(distances, want_d)
    assert np.array_equal(positions, want_i)  # ties in position order, like FAISS's flat scan


def test_backend_with_ids_removals_and_snapshots():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, size=(5000, 8), dtype=np.uint8)
    ids = np.unique(rng.integers(0, 2**62, size=6000))[:5000]
    ids = rng.permutation(ids).astype(np.int64)
    b = HammingFlatBackend(64)
    for s in range(0, 5000, 700):  # growth across many adds
        b.add(codes[s:s + 700], ids[s:s + 700])
    gone = ids[::3]
    b.remove(gone)
    keep = ~np.isin(ids, gone)
    q = rng.integers(0, 256, size=(7, 8), dtype=np.uint8)
    got_ids, got_d = b.search(q, 25)
    want_i, want_d = reference(q, codes[keep], 25)
    assert np.array_equal(got_d, want_d) and np.array_equal(got_ids, ids[keep][want_i])
    again = HammingFlatBackend(64)
    again.load_bytes(b.to_bytes(), b.snapshot_extra())
    assert np.array_equal(again.search(q, 25)[0], got_ids)
    for (ri, rd), qi in zip(b.range_search(q, 20), range(len(q))):
        d = popcount_distances(q[qi:qi + 1], codes[keep])[0]
        assert sorted(ri.tolist()) == sorted(ids[keep][d <= 20].tolist())
        assert (rd <= 20).all() and list(rd) == sorted(rd)


def test_an_older_faiss_snapshot_loads():
    from crossbit.indexer.backends import FlatBackend

    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, size=(300, 16), dtype=np.uint8)
    old = FlatBackend(128)
    old.add(codes, np.arange(100, 400, dtype=np.int64))
    new = HammingFlatBackend(128)
    new.load_bytes(old.to_bytes(), old.snapshot_extra())
    q = codes[:5]
    assert np.array_equal(new.search(q, 10)[1], old.search(q, 10)[1])
    assert np.array_equal(new.all_ids(), np.arange(100, 400))


@pytest.mark.parametrize("bits", [64, 128])
def test_same_distances_as_faiss(bits):
    import faiss

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, size=(20_000, bits // 8), dtype=np.uint8)
    q = rng.integers(0, 256, size=(16, bits // 8), dtype=np.uint8)
    f = faiss.IndexBinaryFlat(bits)
    f.add(codes)
    fd, _ = f.search(q, 10)
    _, d = top_k(words(q), word_major(codes), 10)
    assert np.array_equal(d, fd)
