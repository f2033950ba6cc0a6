"""Training on your own catalog: crossbit train's defaults against the old recipe and the shipped
model, in the shipped model's domain and out of it.

Settings (each catalog a seeded random draw; the training seed is the same number):
- in-domain: 200, 400, 1,000 and 2,000 Flickr8k training images with their captions, scored on
  the 1,000 dev images (5,000 captions). The shipped model was trained on every one of those
  training images, so crossbit train's held-out comparison sees it at its best.
- unseen: catalogs of 200 and 400 from 500 of the dev images, scored on the other 500: the
  shipped model's domain, photos it has never seen (the issue's 400-photo case).
- fashion: 500 and 2,000 Fashion-MNIST training images as a product catalog, each with one
  generated title (class, shade and texture read off the pixels, in one of three phrasings),
  scored on 1,000 test images with their titles; the shipped model is near chance there.
  Also scored: Flickr8k dev (what the model still knows of everyday photos), and mAP with
  relevance = the same product type (class x shade x texture).
Recipes: "old" = fresh heads with crossbit train's former defaults (a tenth held out, 20 to
500; batches of 128; whatever trained is written); "new" = crossbit train's defaults (plan,
--init auto, the keep-the-better rule), reported as trained and as written; "new+replay" =
the same with --replay of the Flickr8k training split at 0.5 (fashion only).
Scores: Hamming R@sum (R@1+5+10 both ways) and text->image R@10, relevance = own image.
Writes bench/results/catalog_training.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
SHADES = ("dark grey", "grey", "white")
TEXTURES = ("plain", "textured")


def fashion_catalog(folder: Path, split: str, n: int, seed: int, prefix: str):
    """Write ``n`` Fashion-MNIST images of ``split`` as PNGs with generated titles.

    Returns:
        (the captions CSV, each image's product type as an int).
    """
    from fashion_hashing import CLASSES, SOURCE, read_idx
    from PIL import Image

    x = read_idx(SOURCE / f"{split}-images-idx3-ubyte.gz")
    y = read_idx(SOURCE / f"{split}-labels-idx1-ubyte.gz")
    pixels = x.astype(np.float32)
    fg = pixels > 20
    mean = (pixels * fg).sum((1, 2)) / np.maximum(fg.sum((1, 2)), 1)
    std = np.array([p[f].std() if f.any() else 0.0 for p, f in zip(pixels, fg)])
    shade, texture = np.zeros(len(x), int), np.zeros(len(x), int)
    for c in range(len(CLASSES)):  # terciles and halves within each class
        s = y == c
        lo, hi = np.percentile(mean[s], [100 / 3, 200 / 3])
        shade[s] = (mean[s] > lo).astype(int) + (mean[s] > hi)
        texture[s] = std[s] > np.median(std[s])
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(x), n, replace=False))
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,caption"]
    for k in picks:
        name = f"{prefix}{k:05d}.png"
        if not (folder / name).exists():
            Image.fromarray(x[k]).save(folder / name)
        c, s, t = CLASSES[y[k]], SHADES[shade[k]], TEXTURES[texture[k]]
        title = [f"{s} {t} {c}", f"{c}, {s}, {t}", f"a {t} {c} in {s}"][rng.integers(3)]
        rows.append(f'"{name}","{title}"')
    csv = folder / f"{prefix}.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, (y[picks] * 6 + shade[picks] * 2 + texture[picks]).astype(int)


def scores(model, raw, types=None) -> dict:
    """Hamming R@sum, text->image R@10 (own image) and, with ``types``, mAP by product type."""
    from crossbit.encoders.training.evaluate import recall_sum
    from crossbit.encoders.training.recipes import held_out_report

    report = held_out_report(model, raw)
    out = {"rsum": round(recall_sum(report), 2),
           "t2i_r10": round(report["text_to_image"]["recall@10"], 2)}
    if types is not None:
        from crossbit.encoders.training.feature_cache import FeatureSet

        onehot = np.eye(types.max() + 1, dtype=np.uint8)[types]
        typed = held_out_report(model, FeatureSet(raw.images, raw.texts, raw.caption_image,
                                                  labels=onehot))
        out["type_map"] = {d: round(typed[d]["map"], 2) for d in ("text_to_image",
                                                                  "image_to_text")}
    return out


def run(recipe: str, pool, n: int, seed: int, tests: dict, replay=None) -> dict:
    """Train one catalog of ``n`` images of ``pool`` with one recipe and score it."""
    from crossbit.encoders.config import ModelConfig
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.training import TrainConfig
    from crossbit.encoders.training.catalog import choose_start, plan_for, reference_model
    from crossbit.encoders.training.recipes import (
        fit_and_judge,
        held_out_images,
        subset_features,
    )

    shipped = tests["_shipped"]
    catalog = subset_features(pool, np.sort(np.random.default_rng(seed).choice(
        len(pool.images), n, replace=False)))
    config = ModelConfig(bits=64, dropout=0.3)  # crossbit train's model options
    old = recipe == "old"
    plan = plan_for(n, val_images=(0 if n < 100 else min(500, max(20, n // 10))) if old
                    else None, batch_size=128 if old else None)
    cfg = TrainConfig(weight_decay=1e-4, seed=seed, epochs=plan.epochs, lr=plan.lr,
                      patience=plan.patience, batch_size=plan.batch_size)
    held = held_out_images(n, plan.val_images, seed)
    start = choose_start("none" if old else "auto", config, n)
    model = start.model or HashModel(config)
    model.semantics = shipped.semantics  # the same class semantics new_model builds
    reference, name = (None, None) if old else reference_model(start, config)
    begin = time.perf_counter()
    outcome = fit_and_judge(model, start.model is not None, catalog, held, cfg, reference, name,
                            replay, 0.5, progress=False)
    seconds = time.perf_counter() - begin
    row = {"recipe": recipe, "n": n, "seed": seed, "val_images": plan.val_images,
           "batch_size": plan.batch_size, "epochs_run": len(outcome.result.history),
           "train_s": round(seconds, 1), "written": outcome.written,
           "verdict": outcome.verdict and outcome.verdict.summary()}
    row["trained"] = {k: scores(model, *v) for k, v in tests.items() if k != "_shipped"}
    row["written_scores"] = row["trained"] if outcome.written == "trained" else \
        {k: scores(outcome.model, *v) for k, v in tests.items() if k != "_shipped"}
    return row


def flickr(args, split: str, model):
    from crossbit.encoders.training.datasets import load_captions_csv
    from crossbit.encoders.training.recipes import feature_set

    root = Path(args.flickr8k)
    pairs = load_captions_csv(root / "captions.csv", root / "images", root / f"{split}.txt")
    return feature_set(model, pairs, args.cache, True, False, 0)


def setting(name: str, args, shipped) -> tuple:
    """(the catalog pool, the tests {name: (features, types)}, the sizes, the recipes)."""
    from crossbit.encoders.training.datasets import load_captions_csv
    from crossbit.encoders.training.recipes import feature_set, subset_features

    dev = flickr(args, "dev", shipped)
    if name == "in-domain":
        return flickr(args, "train", shipped), {"dev": (dev, None)}, args.sizes, ["old", "new"]
    if name == "unseen":
        order = np.random.default_rng(123).permutation(len(dev.images))
        return (subset_features(dev, np.sort(order[:500])),
                {"dev_rest": (subset_features(dev, np.sort(order[500:])), None)},
                args.unseen_sizes, ["old", "new"])
    folder = Path(args.cache).parent / "fashion-catalog"
    pool_csv, _ = fashion_catalog(folder, "train", args.fashion_pool, 0, "p")
    test_csv, types = fashion_catalog(folder, "t10k", 1000, 1, "q")
    pool = feature_set(shipped, load_captions_csv(pool_csv, folder), args.cache, True, True, 0)
    test = feature_set(shipped, load_captions_csv(test_csv, folder), args.cache, True, True, 0)
    return pool, {"fashion_test": (test, types), "flickr8k_dev": (dev, None)}, \
        args.fashion_sizes, ["old", "new", "new+replay"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--settings", default="in-domain,unseen,fashion")
    p.add_argument("--sizes", default="200,400,1000,2000", help="in-domain catalog sizes")
    p.add_argument("--unseen-sizes", default="200,400")
    p.add_argument("--fashion-sizes", default="500,2000")
    p.add_argument("--fashion-pool", type=int, default=6000,
                   help="Fashion-MNIST training images the catalogs are drawn from")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--recipes", help="only these recipes (default: each setting's own)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--cache", default=".cache/features")
    p.add_argument("--out", default="bench/results/catalog_training.json")
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from --out")
    args = p.parse_args(argv)
    if args.plot_only:
        plot(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".png"))
        return 0
    if not (Path(args.flickr8k) / "captions.csv").exists():
        print(f"skipped: Flickr8k not found at {args.flickr8k}")
        return 0
    import torch

    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_image_runtime

    torch.set_num_threads(args.threads)
    shipped = HashModel.load()
    use_image_runtime(shipped)
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update({"what": __doc__.split("\n")[0], "machine": f"{platform.machine()}, "
                   f"{os.cpu_count()} cores", "torch_threads": args.threads,
                   "date": time.strftime("%Y-%m-%d")})
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.settings.split(","):
        pool, tests, sizes, recipes = setting(name, args, shipped)
        if args.recipes:
            recipes = [r for r in recipes if r in args.recipes.split(",")]
        tests["_shipped"] = shipped
        block = {"shipped": {k: scores(shipped, *v) for k, v in tests.items() if k != "_shipped"},
                 "rows": []}
        print(f"{name}: the shipped model: {block['shipped']}", flush=True)
        replay = flickr(args, "train", shipped) if "new+replay" in recipes else None
        for n in (int(s) for s in sizes.split(",")):
            for seed in seeds:
                for recipe in recipes:
                    row = run(recipe, pool, n, seed, tests,
                              replay if recipe == "new+replay" else None)
                    block["rows"].append(row)
                    print(f"{name} n={n} seed={seed} {recipe}: written {row['written']} "
                          f"{row['written_scores']} (trained {row['trained']}; "
                          f"{row['train_s']} s)", flush=True)
        block["medians"] = medians(block)
        result[name] = block
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"written to {out} and {out.with_suffix('.png')}")
    return 0


def medians(block: dict) -> list[dict]:
    """Per size and recipe: medians over seeds of every score, as trained and as written."""
    rows = []
    keys = sorted({(r["n"], r["recipe"]) for r in block["rows"]})
    for n, recipe in keys:
        runs = [r for r in block["rows"] if (r["n"], r["recipe"]) == (n, recipe)]
        entry = {"n": n, "recipe": recipe, "seeds": len(runs),
                 "train_s": float(np.median([r["train_s"] for r in runs])),
                 "written_trained": sum(r["written"] == "trained" for r in runs)}
        for kind in ("trained", "written_scores"):
            entry[kind] = {}
            for test, first in runs[0][kind].items():
                entry[kind][test] = {m: float(np.median([r[kind][test][m] for r in runs]))
                                     for m in ("rsum", "t2i_r10")}
                entry[kind][test]["rsum_min_max"] = [min(r[kind][test]["rsum"] for r in runs),
                                                     max(r[kind][test]["rsum"] for r in runs)]
                if "type_map" in first:
                    entry[kind][test]["type_map"] = {d: float(np.median(
                        [r[kind][test]["type_map"][d] for r in runs])) for d in first["type_map"]}
        rows.append(entry)
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, test) for name, test in (("in-domain", "dev"), ("unseen", "dev_rest"),
                                               ("fashion", "fashion_test"),
                                               ("fashion", "flickr8k_dev")) if name in result]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (name, test) in zip(axes[0], panels):
        block = result[name]
        sizes = sorted({m["n"] for m in block["medians"]})
        ax.plot(sizes, [block["shipped"][test]["rsum"]] * len(sizes), "k--", label="shipped")
        for recipe in ("old", "new", "new+replay"):
            ms = [m for m in block["medians"] if m["recipe"] == recipe]
            if not ms:
                continue
            y = [m["written_scores"][test]["rsum"] for m in ms]
            lo = [m["written_scores"][test]["rsum_min_max"][0] for m in ms]
            hi = [m["written_scores"][test]["rsum_min_max"][1] for m in ms]
            line = ax.errorbar([m["n"] for m in ms], y, yerr=[np.subtract(y, lo),
                                                              np.subtract(hi, y)],
                               marker="o", capsize=3, label=f"{recipe} (written)")
            trained = [m["trained"][test]["rsum"] for m in ms]
            if recipe == "new" and trained != y:  # what the keep-the-better rule turned down
                ax.plot([m["n"] for m in ms], trained, ":", marker=".",
                        color=line.lines[0].get_color(), label="new (trained, not written)")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("catalog images")
        ax.set_ylabel(f"{test} Hamming R@sum")
        ax.set_title(f"{name}: scored on {test}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("crossbit train on a catalog: medians over seeds, min-max bars", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
