"""What re-ranking buys: Flickr8k dev text->image through the real index, Hamming order vs re-ranked.

The 1,000 dev photos go into a flat index with their codes and float embeddings, the 5,000
dev captions are the queries; R@1/5/10 with plain Hamming order (ties broken by FAISS's
order, as the service returns them) and with the top-R shortlist re-ranked by cosine of
the float embeddings, and the time per query of each. Writes bench/results/rerank.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def recalls(ids: np.ndarray, truth: np.ndarray) -> dict:
    return {f"recall@{k}": 100.0 * float(np.mean((ids[:, :k] == truth[:, None]).any(axis=1)))
            for k in (1, 5, 10)}


def answer_map(ids: np.ndarray, relevant) -> float:
    """mAP (percent) of ranked answers: per query, the mean over its relevant items of the
    precision at each one's rank (0 for one not in the answer), ``relevant(q)`` the
    boolean row of which answer ids are relevant and how many exist (a tuple)."""
    aps = []
    for q in range(len(ids)):
        hit, total = relevant(q)
        ranks = np.flatnonzero(hit) + 1
        aps.append(float(np.sum(np.arange(1, len(ranks) + 1) / ranks)) / total if total else 0.0)
    return 100.0 * float(np.mean(aps))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--shortlists", type=int, nargs="+", default=[20, 50, 100, 200])
    p.add_argument("--text-runtime", default="auto",
                   help="the text encoder's runtime (auto: ONNX fp32; int8)")
    p.add_argument("--model", default=None, help="a model directory or shipped name "
                   "(default, mpnet-64); default: the shipped default")
    p.add_argument("--out", default="bench/results/rerank.json")
    args = p.parse_args(argv)
    root = Path(args.flickr8k)
    if not (root / "captions.csv").exists():
        print(f"skipped: Flickr8k not found at {root}")
        return 0
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_head_runtime, use_image_runtime, use_text_runtime
    from crossbit.encoders.training.datasets import load_captions_csv
    from crossbit.encoders.training.evaluate import encode_pairs
    from crossbit.indexer import open_index

    model = HashModel.load(args.model)
    use_image_runtime(model)
    use_text_runtime(model, args.text_runtime)
    use_head_runtime(model)  # as the server runs them
    dev = load_captions_csv(root / "captions.csv", root / "images", root / "dev.txt")
    images, texts = encode_pairs(model, dev, ".cache/features", progress=False)
    truth = dev.caption_image
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        index = open_index(tmp, model.bits, "flat", snapshot_interval=0)
        index.add(images.codes, ids=np.arange(len(images.codes)), embeddings=images.embeddings)
        start = time.perf_counter()
        plain = index.search(texts.codes, 10)
        rows["hamming"] = {**recalls(plain.ids, truth),
                           "ms_per_query": 1000 * (time.perf_counter() - start) / len(truth)}
        for r in args.shortlists:
            start = time.perf_counter()
            res = index.search_rerank(texts.codes, texts.embeddings, 10, shortlist=r)
            rows[f"rerank_top{r}"] = {**recalls(res.ids, truth),
                                      "ms_per_query": 1000 * (time.perf_counter() - start) / len(truth)}
        # mAP of the service's answer: top_k=100, the top-100 shortlist re-ranked
        answer = index.search_rerank(texts.codes, texts.embeddings, 100, shortlist=100).ids
        rows["text_to_image_answer_map@100"] = {"map": answer_map(
            answer, lambda q: (answer[q] == truth[q], 1))}
        index.close()
        # the other way: images asking for captions (any of their five is a hit)
        index = open_index(Path(tmp) / "texts", model.bits, "flat", snapshot_interval=0)
        index.add(texts.codes, ids=np.arange(len(texts.codes)), embeddings=texts.embeddings)
        owner = np.asarray(truth)

        def image_recalls(ids):
            return {f"recall@{k}": 100.0 * float(np.mean(
                [(owner[ids[q, :k][ids[q, :k] >= 0]] == q).any() for q in range(len(ids))]))
                for k in (1, 5, 10)}

        rows["image_to_text_hamming"] = image_recalls(index.search(images.codes, 10).ids)
        rows["image_to_text_rerank_top100"] = image_recalls(
            index.search_rerank(images.codes, images.embeddings, 10, shortlist=100).ids)
        answer = index.search_rerank(images.codes, images.embeddings, 100, shortlist=100).ids
        counts = np.bincount(owner, minlength=len(images.codes))
        rows["image_to_text_answer_map@100"] = {"map": answer_map(
            answer, lambda q: ((answer[q] >= 0) & (owner[np.maximum(answer[q], 0)] == q),
                               int(counts[q])))}
        index.close()
    for name, row in rows.items():
        print(f"{name:14s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    result = {"what": "Flickr8k dev text->image (and image->text), 1,000 photos x 5,000 "
                      f"captions, model {model.name} ({model.bits} bits); re-rank by cosine of "
                      "its float embeddings",
              "text_runtime": args.text_runtime,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
