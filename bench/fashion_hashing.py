"""The seeds' hashing protocol on labelled data: Fashion-MNIST (Debian's dataset-fashion-mnist),
the class name as each image's text, mAP over the Hamming ranking with relevance = same label.

A database of 10,000 training images (with their texts) and 1,000 test images as queries
(seeded draws). Heads are trained on the database (a tenth held out for early stopping) with
the DCMH objective (label-similarity likelihood + quantization + bit balance) and with the
InfoNCE recipe, at 16, 32 and 64 bits, on the same cached backbone features. Reported:
image->text (image queries, database texts) and text->image (text queries, database images)
mAP over the whole database, ties counted at their expected value (McSherry and Najork).
Writes bench/results/fashion_hashing.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle boot"]
SOURCE = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, picks: np.ndarray,
                prefix: str) -> Path:
    from PIL import Image

    rows = ["image,text,labels"]
    for n in picks:
        name = f"{prefix}{n:05d}.png"
        Image.fromarray(images[n]).save(folder / name)
        cls = CLASSES[labels[n]]
        rows.append(f"{name},a photo of a {cls},{cls}")
    csv = folder / f"{prefix}.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def cross_map(model, db, queries) -> dict:
    """mAP both ways over the Hamming ranking, relevance = same label."""
    import torch

    from crossbit.encoders.model import head_outputs
    from crossbit.encoders.training.recipes import head_inputs
    from crossbit.encoders.training.retrieval_metrics import ranking_metrics, summarize

    def encode(feats):
        f = head_inputs(model, feats, False)
        with torch.no_grad():
            return (head_outputs(model.image_head, torch.as_tensor(f.images)),
                    head_outputs(model.text_head, torch.as_tensor(f.texts)))

    db_img, db_txt = encode(db)
    q_img, q_txt = encode(queries)
    relevant = (queries.labels.astype(np.float32) @ db.labels.T.astype(np.float32)) > 0

    def hamming(a, b):
        return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2)

    out = {}
    for name, (q, d) in {"image_to_text": (q_img.codes, db_txt.codes),
                         "text_to_image": (q_txt.codes, db_img.codes)}.items():
        dist = np.concatenate([hamming(q[i:i + 100], d) for i in range(0, len(q), 100)])
        out[name] = summarize(ranking_metrics(dist, relevant))["map"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--bits", default="16,32,64")
    p.add_argument("--cache", default=".cache/features")
    p.add_argument("--out", default="bench/results/fashion_hashing.json")
    args = p.parse_args(argv)
    if not (SOURCE / "train-images-idx3-ubyte.gz").exists():
        print(f"skipped: no Fashion-MNIST at {SOURCE} (apt-get install dataset-fashion-mnist)")
        return 0
    from crossbit.encoders.config import ModelConfig
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_image_runtime
    from crossbit.encoders.training import TrainConfig
    from crossbit.encoders.training.datasets import load_multilabel_csv
    from crossbit.encoders.training.recipes import feature_set, train_model

    rng = np.random.default_rng(0)
    train_x, train_y = read_idx(SOURCE / "train-images-idx3-ubyte.gz"), \
        read_idx(SOURCE / "train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz"), \
        read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    work = Path(tempfile.mkdtemp(prefix="crossbit-fashion-"))
    db_csv = write_split(work, train_x, train_y, np.sort(rng.choice(len(train_x), args.database,
                                                                    replace=False)), "db")
    q_csv = write_split(work, test_x, test_y, np.sort(rng.choice(len(test_x), args.queries,
                                                                 replace=False)), "q")
    db_pairs, q_pairs = load_multilabel_csv(db_csv, work), load_multilabel_csv(q_csv, work)
    rows = []
    for bits in (int(b) for b in args.bits.split(",")):
        for objective in ("dcmh", "infonce"):
            start = time.perf_counter()
            out = work / f"{objective}-{bits}"
            train_model(ModelConfig(bits=bits), TrainConfig(objective=objective), db_pairs,
                        min(500, args.database // 10), out, args.cache, progress=False,
                        init="none", keep_trained=True)
            seconds = time.perf_counter() - start
            model = HashModel.load(out)
            use_image_runtime(model)
            db = feature_set(model, db_pairs, args.cache, False, False, 0)
            queries = feature_set(model, q_pairs, args.cache, False, False, 0)
            maps = cross_map(model, db, queries)
            rows.append({"bits": bits, "objective": objective, "train_s": seconds, **maps})
            print(f"{bits:3d} bits, {objective:7s}: mAP image->text {maps['image_to_text']:.1f}, "
                  f"text->image {maps['text_to_image']:.1f} (trained in {seconds:.0f} s)",
                  flush=True)
    result = {"what": __doc__.split("\n")[0], "database": args.database,
              "queries": args.queries, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
