"""Tie-aware ranking metrics against a brute force over every tie order, on random data."""

import itertools
import math

import numpy as np
import pytest

from crossbit.encoders.training.retrieval_metrics import hamming_pr_curve, ranking_metrics, summarize


def brute_force(distances, relevant, ks=(1, 2, 3)):
    """Average the plain metrics over every ordering that respects the distances."""
    m = len(distances)
    keys = sorted(set(distances))
    groups = [[i for i in range(m) if distances[i] == d] for d in keys]
    totals = {f"recall@{k}": 0.0 for k in ks} | {f"precision@{k}": 0.0 for k in ks}
    totals |= {"ap": 0.0, "first_rank": 0.0}
    count = 0
    for perms in itertools.product(*[itertools.permutations(g) for g in groups]):
        ranking = [i for p in perms for i in p]
        rel = [bool(relevant[i]) for i in ranking]
        hits, ap = 0, 0.0
        for pos, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                ap += hits / pos
        totals["ap"] += ap / sum(rel)
        totals["first_rank"] += rel.index(True) + 1
        for k in ks:
            totals[f"recall@{k}"] += float(any(rel[:k]))
            totals[f"precision@{k}"] += sum(rel[:k]) / k
        count += 1
    return {k: v / count for k, v in totals.items()}


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_on_random_ties(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 8))
    distances = rng.integers(0, 3, size=m)
    relevant = rng.random(m) < 0.4
    if not relevant.any():
        relevant[rng.integers(m)] = True
    expected = brute_force(list(distances), relevant)
    got = ranking_metrics(distances[None, :], relevant[None, :], ks=(1, 2, 3))
    for key, value in expected.items():
        assert got[key][0] == pytest.approx(value, abs=1e-9), key


def test_many_queries_and_chunking_agree():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 5, size=(300, 40))
    rel = rng.random((300, 40)) < 0.1
    rel[:, 0] = True
    whole = ranking_metrics(d, rel)
    for i in (0, 17, 299):
        single = ranking_metrics(d[i : i + 1], rel[i : i + 1])
        for key in whole:
            assert whole[key][i] == pytest.approx(single[key][0])


def test_no_ties_equals_plain_metrics():
    d = np.array([[0.1, 0.5, 0.2, 0.9]])
    rel = np.array([[False, True, False, True]])
    got = ranking_metrics(d, rel, ks=(1, 2, 3))
    # ranking: items 0, 2, 1, 3 -> relevant at positions 3 and 4
    assert got["first_rank"][0] == 3
    assert got["recall@2"][0] == 0 and got["recall@3"][0] == 1
    assert got["ap"][0] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert got["precision@3"][0] == pytest.approx(1 / 3)


def test_all_tied_recall_is_a_fair_share():
    d = np.zeros((1, 10))
    rel = np.zeros((1, 10), bool)
    rel[0, 3] = True
    got = ranking_metrics(d, rel, ks=(1, 5))
    assert got["recall@1"][0] == pytest.approx(0.1)
    assert got["recall@5"][0] == pytest.approx(0.5)
    assert got["first_rank"][0] == pytest.approx(5.5)


def test_summary_and_queries_without_relevant_items():
    d = np.array([[0, 1], [1, 0]])
    rel = np.array([[True, False], [False, False]])
    s = summarize(ranking_metrics(d, rel, ks=(1,)))
    assert s["recall@1"] == 100.0 and s["map"] == 100.0 and s["median_rank"] == 1.0


def test_hamming_pr_curve_counts_within_radius():
    d = np.array([[0, 1, 2, 2]])
    rel = np.array([[True, False, True, False]])
    pr = hamming_pr_curve(d, rel, bits=2)
    assert pr["precision"] == pytest.approx([100.0, 50.0, 50.0])
    assert pr["recall"] == pytest.approx([50.0, 50.0, 100.0])
    assert pr["mean_retrieved"] == [1.0, 2.0, 4.0]
    assert not math.isnan(pr["recall"][0])


def test_asymmetric_ranking_scores_float_queries_against_codes():
    from crossbit.encoders.codes import pack_signs
    from crossbit.encoders.model import Encoded
    from crossbit.encoders.training.evaluate import evaluate_encoded

    rng = np.random.default_rng(4)
    image_floats = np.tanh(rng.normal(size=(30, 16))).astype(np.float32)
    caption_image = np.repeat(np.arange(30), 2)
    text_floats = np.tanh(image_floats[caption_image] + rng.normal(size=(60, 16))).astype(np.float32)

    def encoded(x):
        return Encoded(pack_signs(x), x / np.linalg.norm(x, axis=1, keepdims=True))

    report = evaluate_encoded(encoded(image_floats), encoded(text_floats), caption_image, 16,
                              curves=False)
    # brute force: each caption's float vector against every image's +-1 code (no ties)
    scores = text_floats @ np.where(image_floats > 0, 1.0, -1.0).T
    rank = (scores > scores[np.arange(60), caption_image][:, None]).sum(1)  # 0 = first
    for k in (1, 5, 10):
        assert report["asymmetric"]["text_to_image"][f"recall@{k}"] == pytest.approx(
            100 * np.mean(rank < k))
    scores = image_floats @ np.where(text_floats > 0, 1.0, -1.0).T  # images ask, captions answer
    best = np.array([min((scores[i] > scores[i, j]).sum() for j in (2 * i, 2 * i + 1))
                     for i in range(30)])
    assert report["asymmetric"]["image_to_text"]["recall@1"] == pytest.approx(100 * np.mean(best < 1))
    # a separate float embedding (not the tanh outputs) has no asymmetric ranking
    wide = Encoded(pack_signs(image_floats), rng.normal(size=(30, 8)).astype(np.float32))
    wide_t = Encoded(pack_signs(text_floats), rng.normal(size=(60, 8)).astype(np.float32))
    assert "asymmetric" not in evaluate_encoded(wide, wide_t, caption_image, 16, curves=False)
