"""Evaluation: both retrieval directions over the Hamming ranking and the float upper bound, with plots."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from crossbit.encoders.codes import hamming_matrix, unpack_codes
from crossbit.encoders.model import Encoded, HashModel
from crossbit.encoders.training.datasets import Pairs
from crossbit.encoders.training.retrieval_metrics import hamming_pr_curve, ranking_metrics, summarize

log = logging.getLogger(__name__)

KS = (1, 5, 10)
CURVE_KS = (1, 2, 5, 10, 20, 50, 100)
TIES = ("expected value under a uniformly random order of items at equal distance "
        "(exact, not sampled; McSherry & Najork 2008 for AP)")


def relevance(caption_image: np.ndarray, n_images: int, labels: np.ndarray | None = None):
    """Text->image relevance (n_captions, n_images): the caption's own image, or a shared label."""
    caption_image = np.asarray(caption_image)
    if labels is None:
        rel = np.zeros((len(caption_image), n_images), dtype=bool)
        rel[np.arange(len(caption_image)), caption_image] = True
        return rel
    labels = np.asarray(labels, dtype=np.float32)
    return (labels[caption_image] @ labels.T) > 0


def _directions(t2i_dist: np.ndarray, rel: np.ndarray, ks) -> dict:
    return {"text_to_image": ranking_metrics(t2i_dist, rel, ks),
            "image_to_text": ranking_metrics(t2i_dist.T, rel.T, ks)}


def evaluate_encoded(images: Encoded, texts: Encoded, caption_image: np.ndarray, bits: int,
                     labels: np.ndarray | None = None, curves: bool = True) -> dict:
    """Metrics of encoded images and captions, both directions, codes and floats.

    Returns:
        a report dict: ``text_to_image`` and ``image_to_text`` (Hamming ranking), the
        same under ``float`` (cosine of the float embeddings) and, when the floats are
        the tanh outputs, under ``asymmetric`` (the query's floats against the stored
        items' codes: what a server holding only codes can rank by), ``bits``, ``images``,
        ``captions``, and with ``curves`` the PR curve over Hamming radius and precision@N.
    """
    rel = relevance(caption_image, len(images.codes), labels)
    ks = CURVE_KS if curves else KS
    hamming = _directions(hamming_matrix(texts.codes, images.codes), rel, ks)
    cosine = _directions(-(texts.embeddings @ images.embeddings.T), rel, ks)
    report: dict = {"bits": int(bits), "images": int(len(images.codes)),
                    "captions": int(len(texts.codes)), "ties": TIES,
                    "relevance": "shared label" if labels is not None else "own image/captions"}
    keep = {"recall@1", "recall@5", "recall@10", "precision@1", "precision@5", "precision@10",
            "median_rank", "map"}
    report["float"] = {}
    for name in ("text_to_image", "image_to_text"):
        full_h, full_f = summarize(hamming[name]), summarize(cosine[name])
        report[name] = {k: v for k, v in full_h.items() if k in keep}
        report["float"][name] = {k: v for k, v in full_f.items() if k in keep}
        if curves:
            report.setdefault("precision_at_n", {})[name] = {
                "n": list(CURVE_KS),
                "hamming": [full_h[f"precision@{k}"] for k in CURVE_KS],
                "float": [full_f[f"precision@{k}"] for k in CURVE_KS]}
    if images.embeddings.shape[1] == bits:  # the floats are the tanh outputs: asymmetric too
        asymmetric = {
            "text_to_image": ranking_metrics(-(texts.embeddings @ unpack_codes(images.codes).T),
                                             rel, KS),
            "image_to_text": ranking_metrics(-(images.embeddings @ unpack_codes(texts.codes).T),
                                             rel.T, KS)}
        report["asymmetric"] = {name: {k: v for k, v in summarize(m).items() if k in keep}
                                for name, m in asymmetric.items()}
    if curves:
        dist = hamming_matrix(texts.codes, images.codes)
        report["pr_curve"] = {"text_to_image": hamming_pr_curve(dist, rel, bits),
                              "image_to_text": hamming_pr_curve(dist.T, rel.T, bits)}
    return report


def recall_sum(report: dict) -> float:
    """R@1 + R@5 + R@10 over both directions (the usual single figure for model selection)."""
    return sum(report[d][f"recall@{k}"] for d in ("text_to_image", "image_to_text") for k in KS)


def measure_speed(model: HashModel, pairs: Pairs, images: Encoded, n_text: int = 256,
                  n_images: int = 64) -> dict:
    """Encoding throughput (texts/s, images/s; batched) and Hamming search queries/s over the codes."""
    texts = pairs.captions[:n_text]
    paths = pairs.images[:n_images]
    model.encode_texts(texts[:8])  # warm-up: first runs of a session allocate (features
    model.encode_images(paths[:8])  # may all have come from the cache so far)
    start = time.perf_counter()
    model.encode_texts(texts)
    text_rate = len(texts) / (time.perf_counter() - start)
    single = []
    for text in texts[:20]:
        t0 = time.perf_counter()
        model.encode_texts([text])
        single.append(time.perf_counter() - t0)
    start = time.perf_counter()
    model.encode_images(paths)
    image_rate = len(paths) / (time.perf_counter() - start)
    queries = images.codes[: min(len(images.codes), 1000)]
    try:
        import faiss

        index = faiss.IndexBinaryFlat(model.bits)
        index.add(images.codes)
        start = time.perf_counter()
        for q in queries:
            index.search(q[None, :], 10)
        search_rate = len(queries) / (time.perf_counter() - start)
        engine = "faiss IndexBinaryFlat, one query per call"
    except ImportError:
        start = time.perf_counter()
        hamming_matrix(queries, images.codes)
        search_rate = len(queries) / (time.perf_counter() - start)
        engine = "numpy popcount, batched"
    return {"texts_per_s_batched": text_rate, "single_text_ms_median": 1000 * float(np.median(single)),
            "images_per_s_batched": image_rate, "search_queries_per_s": search_rate,
            "search_engine": engine, "search_items": int(len(images.codes)),
            "image_runtime": "onnx" if model.image_runtime is not None else "torch"}


def encode_pairs(model: HashModel, pairs: Pairs, cache: str | os.PathLike | None = None,
                 progress: bool = True) -> tuple[Encoded, Encoded]:
    """Encode a dataset's images and captions (through the feature cache when given)."""
    from crossbit.encoders.training.feature_cache import image_features, text_features

    img = model.encode_image_features(image_features(model, pairs.images, cache, progress=progress))
    txt = model.encode_text_features(text_features(model, pairs.captions, cache, progress=progress))
    return img, txt


def write_plots(report: dict, prefix: str | os.PathLike) -> list[str]:
    """PNG plots: precision-recall over Hamming radius and precision@N (codes vs floats)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, curve in report["pr_curve"].items():
        ax.plot(curve["recall"], curve["precision"], marker=".", label=name.replace("_", " "))
    ax.set_xlabel("recall (%)")
    ax.set_ylabel("precision (%)")
    ax.set_title(f"Hash lookup within Hamming radius 0..{report['bits']}")
    ax.legend()
    ax.grid(alpha=0.3)
    path = f"{prefix}_pr_curve.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, curve in report["precision_at_n"].items():
        label = name.replace("_", " ")
        ax.plot(curve["n"], curve["hamming"], marker="o", label=f"{label}, {report['bits']}-bit")
        ax.plot(curve["n"], curve["float"], linestyle="--", label=f"{label}, float")
    ax.set_xscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel("precision@N (%)")
    ax.set_title("Precision@N")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = f"{prefix}_precision_at_n.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def run_evaluation(model: HashModel, pairs: Pairs, json_path: str | os.PathLike | None = None,
                   plots: bool = True, cache: str | os.PathLike | None = None,
                   speed: bool = True, progress: bool = True) -> dict:
    """Encode a dataset, score it, measure speed, write the JSON report and plots."""
    images, texts = encode_pairs(model, pairs, cache, progress)
    report = evaluate_encoded(images, texts, pairs.caption_image, model.bits, pairs.labels)
    if speed:
        report["speed"] = measure_speed(model, pairs, images)
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        if plots:
            report["plots"] = write_plots(report, str(json_path.with_suffix("")))
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    """A short table of the headline figures."""
    lines = [f"{report['images']} images, {report['captions']} captions, {report['bits']} bits",
             f"{'':25s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'medR':>6s} {'mAP':>6s}"]
    spaces = [("hamming", report), ("float", report["float"])]
    if "asymmetric" in report:
        spaces.insert(1, ("asymmetric", report["asymmetric"]))
    for space, block in spaces:
        for name in ("image_to_text", "text_to_image"):
            m = block[name]
            lines.append(f"{space + ' ' + name:25s} {m['recall@1']:6.1f} {m['recall@5']:6.1f} "
                         f"{m['recall@10']:6.1f} {m['median_rank']:6.1f} {m['map']:6.1f}")
    return "\n".join(lines)
