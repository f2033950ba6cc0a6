"""Retrieval metrics over a ranking with ties handled as the expectation under random tie order.

Hamming distances tie often. Instead of letting argsort break ties (which flatters or
punishes a model by the order items happen to be stored in), every metric here is the
exact expected value when items at equal distance are put in a uniformly random order:

- Recall@K: the probability that at least one relevant item lands in the top K.
- Precision@K: the expected number of relevant items in the top K, divided by K.
- AP: the tie-aware average precision of McSherry and Najork (2008).
- Rank of the first relevant item: its expectation, a + (t + 1) / (r + 1) for a tie group
  of t items holding r relevant ones after a items that rank strictly better.
"""

from __future__ import annotations

import numpy as np


def _groups(distances: np.ndarray, relevant: np.ndarray):
    """Per query: the tie groups of the sorted ranking.

    Returns:
        flat arrays over all groups of all queries: query index, items before the group (s),
        group size (t), relevant items in the group (r), relevant items before it (rb).
    """
    n, m = distances.shape
    order = np.argsort(distances, axis=1, kind="stable")
    d = np.take_along_axis(distances, order, axis=1)
    rel = np.take_along_axis(relevant, order, axis=1).astype(np.int64)
    new = np.ones((n, m), dtype=bool)
    new[:, 1:] = d[:, 1:] != d[:, :-1]
    gid = np.cumsum(new.ravel()) - 1  # global group id, in row-major order
    n_groups = gid[-1] + 1
    t = np.bincount(gid, minlength=n_groups)
    r = np.bincount(gid, weights=rel.ravel(), minlength=n_groups).astype(np.int64)
    query = np.repeat(np.arange(n), new.sum(axis=1))
    start = np.flatnonzero(new.ravel()) % m
    rel_cum = np.cumsum(rel, axis=1)
    before = np.where(start > 0, rel_cum[query, np.maximum(start - 1, 0)], 0)
    return query, start, t, r, before


def _harmonic(n: int) -> np.ndarray:
    h = np.zeros(n + 1)
    h[1:] = np.cumsum(1.0 / np.arange(1, n + 1))
    return h


def ranking_metrics(distances: np.ndarray, relevant: np.ndarray,
                    ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, np.ndarray]:
    """Tie-aware metrics for each query.

    Args:
        distances: (n_queries, n_items), lower is better (Hamming distance, or -cosine).
        relevant: (n_queries, n_items) bool, True where the item is relevant to the query.
        ks: cut-offs for recall and precision.

    Returns:
        per-query arrays: ``recall@K``, ``precision@K``, ``ap`` and ``first_rank``
        (1-based expected rank of the first relevant item); queries without any
        relevant item get NaN.
    """
    distances = np.asarray(distances)
    relevant = np.asarray(relevant, dtype=bool)
    if distances.shape != relevant.shape or distances.ndim != 2:
        raise ValueError(f"shapes differ: {distances.shape} vs {relevant.shape}")
    step = max(1, 4_000_000 // max(1, distances.shape[1]))
    if len(distances) > step:  # bound memory: metrics are per query, so chunks concatenate
        parts = [ranking_metrics(distances[i : i + step], relevant[i : i + step], ks)
                 for i in range(0, len(distances), step)]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    n, m = distances.shape
    q, s, t, r, rb = _groups(distances, relevant)
    total_rel = relevant.sum(axis=1)
    out: dict[str, np.ndarray] = {}

    # average precision, McSherry & Najork: group contribution
    # (r/t) * [ (rb+1) * dH + (r-1)/(t-1) * (t - (s+1) * dH) ],  dH = H(s+t) - H(s)
    harmonic = _harmonic(m)
    dh = harmonic[s + t] - harmonic[s]
    spread = np.where(t > 1, (r - 1) / np.maximum(t - 1, 1) * (t - (s + 1) * dh), 0.0)
    contrib = np.where(r > 0, r / t * ((rb + 1) * dh + spread), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["ap"] = np.bincount(q, weights=contrib, minlength=n) / total_rel

    # the first group holding a relevant item: expected first rank and hit probabilities
    has = r > 0
    first = np.full(n, -1)
    idx = np.flatnonzero(has)
    first_of_query = np.full(n, len(q))
    np.minimum.at(first_of_query, q[idx], idx)
    ok = first_of_query < len(q)
    first[ok] = first_of_query[ok]
    f = first[ok]
    rank = np.full(n, np.nan)
    rank[ok] = s[f] + (t[f] + 1) / (r[f] + 1)
    out["first_rank"] = rank
    for k in ks:
        recall = np.full(n, np.nan)
        # P(no relevant item of the group among the first k - s positions) = C(t-r, j)/C(t, j)
        j = np.clip(k - s[f], 0, t[f])
        recall[ok] = 1.0 - _miss_probability(t[f], r[f], j)
        out[f"recall@{k}"] = recall
        # expected relevant items in the top k: whole groups inside, a share of the cut group
        inside = np.clip(k - s, 0, t)
        expected = np.bincount(q, weights=r * inside / t, minlength=n)
        precision = expected / k
        precision[total_rel == 0] = np.nan
        out[f"precision@{k}"] = precision
    return out


def _miss_probability(t: np.ndarray, r: np.ndarray, j: np.ndarray) -> np.ndarray:
    """C(t - r, j) / C(t, j): none of r marked items among j drawn from t, computed as a product."""
    out = np.ones(len(t))
    for i in range(len(t)):
        ti, ri, ji = int(t[i]), int(r[i]), int(j[i])
        if ji > ti - ri:
            out[i] = 0.0
        else:
            out[i] = np.prod((ti - ri - np.arange(ji)) / (ti - np.arange(ji))) if ji else 1.0
    return out


def summarize(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    """Means in percent (recall, precision, mAP) and the median of the expected first rank."""
    out = {}
    for key, values in per_query.items():
        values = values[~np.isnan(values)]
        if key == "first_rank":
            out["median_rank"] = float(np.median(values)) if len(values) else float("nan")
        elif key == "ap":
            out["map"] = 100.0 * float(values.mean()) if len(values) else float("nan")
        else:
            out[key] = 100.0 * float(values.mean()) if len(values) else float("nan")
    return out


def hamming_pr_curve(distances: np.ndarray, relevant: np.ndarray, bits: int) -> dict[str, list]:
    """Hash lookup: precision and recall of everything within Hamming radius 0..bits.

    Precision is averaged over queries, with a query that retrieves nothing counting
    as precision 0 (the usual hashing convention); recall is averaged over queries
    that have relevant items.
    """
    distances = np.asarray(distances)
    relevant = np.asarray(relevant, dtype=bool)
    total_rel = relevant.sum(axis=1)
    precision, recall, retrieved = [], [], []
    n = len(distances)
    count = np.zeros(n)
    hits = np.zeros(n)
    for radius in range(bits + 1):
        at = distances == radius
        count += at.sum(axis=1)
        hits += (at & relevant).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(count > 0, hits / np.maximum(count, 1), 0.0)
            rc = hits[total_rel > 0] / total_rel[total_rel > 0]
        precision.append(100.0 * float(p.mean()))
        recall.append(100.0 * float(rc.mean()) if len(rc) else float("nan"))
        retrieved.append(float(count.mean()))
    return {"radius": list(range(bits + 1)), "precision": precision, "recall": recall,
            "mean_retrieved": retrieved}
