"""How much data buys how much recall: heads trained on 250 to 6,000 Flickr8k training images,
scored on the 1,000 dev images (never trained or tuned on).

Each size takes a random subset of the training split (seed 0; the smaller subsets inside the
larger), holds out what ``crossbit train`` holds out by default for early stopping (a tenth,
20 to 500), and trains 64-bit heads with the shipped recipe's defaults (InfoNCE on all
captions, a float teacher distilled, one seed, no crop views; backbones frozen, their features
computed once). Dev: R@1/5/10 both ways over the Hamming ranking and over the float
embeddings, R@sum, mAP. Writes bench/results/learning_curve.json and learning_curve.png.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--sizes", default="250,500,1000,2000,4000,6000")
    p.add_argument("--cache", default=".cache/features")
    p.add_argument("--epochs", default="60",
                   help="epochs per size: a number, or 'auto' (about 3,000 steps, 60 to 400 epochs:"
                        " a trial, not crossbit train's default)")
    p.add_argument("--out", default="bench/results/learning_curve.json")
    args = p.parse_args(argv)
    root = Path(args.flickr8k)
    if not (root / "captions.csv").exists():
        print(f"skipped: Flickr8k not found at {root}")
        return 0
    from crossbit.encoders.config import ModelConfig
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.training import TrainConfig, save_checkpoint
    from crossbit.encoders.training.datasets import load_captions_csv
    from crossbit.encoders.training.evaluate import recall_sum, run_evaluation
    from crossbit.encoders.training.recipes import (
        feature_set,
        head_inputs,
        held_out_images,
        train_model,
        train_seeds,
        use_image_runtime,
    )

    train_pairs = load_captions_csv(root / "captions.csv", root / "images", root / "train.txt")
    dev = load_captions_csv(root / "captions.csv", root / "images", root / "dev.txt")
    order = np.random.default_rng(0).permutation(len(train_pairs.images))
    # one model built as crossbit train builds it, features of all training images once
    work = Path(tempfile.mkdtemp(prefix="crossbit-curve-"))
    cfg = TrainConfig()
    train_model(ModelConfig(bits=64), TrainConfig(epochs=1, distill=0.0), train_pairs, 0,
                work / "warm", args.cache, progress=False, init="none",
                keep_trained=True)  # fills the feature cache
    model = HashModel.load(work / "warm")
    use_image_runtime(model)
    features = feature_set(model, train_pairs, args.cache, cfg.flip, False, 0)
    from crossbit.encoders.training.recipes import subset_features

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        chosen = np.sort(order[:n])
        val_n = auto_held_out(n)
        held = chosen[held_out_images(n, val_n, 0)] if val_n else np.zeros(0, np.int64)
        rest = np.setdiff1d(chosen, held)
        fresh = HashModel(model.config)
        fresh._text, fresh.semantics = model._text, model.semantics
        start = time.perf_counter()
        train_feats = head_inputs(fresh, subset_features(features, rest), False)
        val_feats = head_inputs(fresh, subset_features(features, held), False) if val_n else None
        epochs = auto_epochs(len(rest), cfg.batch_size) if args.epochs == "auto" \
            else int(args.epochs)
        run_cfg = TrainConfig(seed=0, epochs=epochs)
        result = train_seeds(fresh, train_feats, val_feats, run_cfg, progress=False)
        seconds = time.perf_counter() - start
        out = work / f"n{n}"
        save_checkpoint(fresh, run_cfg, result, out, {"train_images": len(rest),
                                                       "val_images": len(held)})
        scored = HashModel.load(out)
        use_image_runtime(scored)
        ev = run_evaluation(scored, dev, None, plots=False, cache=args.cache, speed=False,
                            progress=False)
        row = {"train_images": n, "fit_images": int(len(rest)), "held_out": int(len(held)),
               "epochs": epochs, "epochs_run": len(result.history),
               "train_s": seconds, "hamming_rsum": recall_sum(ev),
               "float_rsum": recall_sum(ev["float"]),
               "hamming": {d: {k: ev[d][k] for k in ("recall@1", "recall@5", "recall@10", "map")}
                           for d in ("image_to_text", "text_to_image")},
               "float": {d: {k: ev["float"][d][k] for k in ("recall@1", "recall@5", "recall@10")}
                         for d in ("image_to_text", "text_to_image")}}
        rows.append(row)
        h, f = row["hamming"], row["float"]
        print(f"{n:5d} images ({len(rest)} fit, {len(held)} held out, {seconds:.0f} s): dev "
              f"Hamming R@sum {row['hamming_rsum']:.1f} (t->i R@10 "
              f"{h['text_to_image']['recall@10']:.1f}), float R@sum {row['float_rsum']:.1f} "
              f"(t->i R@10 {f['text_to_image']['recall@10']:.1f})", flush=True)
    result = {"what": __doc__.split("\n")[0], "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"written to {out} and {out.with_suffix('.png')}")
    return 0


def auto_held_out(n_images: int) -> int:
    """What crossbit train held out by default when these figures were taken (a tenth, 20 to
    500; none below 100 images); its default is now catalog.auto_held_out."""
    return 0 if n_images < 100 else min(500, max(20, n_images // 10))


def auto_epochs(n_fit: int, batch_size: int, steps: int = 3000) -> int:
    """About ``steps`` optimizer steps, 60 to 400 epochs (tried for small catalogs)."""
    per_epoch = max(1, -(-n_fit // batch_size))
    return int(min(400, max(60, -(-steps // per_epoch))))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["train_images"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(n, [r["float_rsum"] for r in rows], "o-", label="float embeddings (cosine)")
    ax.plot(n, [r["hamming_rsum"] for r in rows], "s-", label="64-bit codes (Hamming)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(n, [str(x) for x in n])
    ax.set_xlabel("Flickr8k training images (5 captions each)")
    ax.set_ylabel("dev R@sum (R@1+5+10, both ways)")
    ax.set_title("crossbit heads: recall bought by training data")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
