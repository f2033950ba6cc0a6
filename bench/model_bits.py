"""Benchmark: Flickr8k dev retrieval for 32/64/128-bit codes and the float embeddings.

Trains heads for each code length the way ``make train-default`` does (the 64-bit one is
the shipped model unless --retrain-64), scores each on the 1,000 dev images x 5,000
captions, and writes bench/results/model_bits.json plus a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

PUBLISHED = {  # real-valued models on the Flickr8k 1K test split: image->text, text->image
    "Kiros et al. 2014 VSE": ((18.0, 40.9, 55.0), (12.5, 37.0, 51.5)),
    "m-CNN (Ma et al. 2015)": ((24.8, 53.7, 67.1), (20.3, 47.6, 61.7)),
    "Klein et al. GMM+HGLMM": ((31.0, 59.3, 73.7), (21.2, 50.0, 64.8)),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--flickr8k", default=os.environ.get("CROSSBIT_FLICKR8K",
                                                        "../shared/datasets/flickr8k"))
    p.add_argument("--bits", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--out", default="bench/results/model_bits.json")
    p.add_argument("--runs", default="runs")
    p.add_argument("--cache", default=".cache/features")
    p.add_argument("--retrain-64", action="store_true")
    p.add_argument("--seeds", type=int, default=5,
                   help="seeds per code length, the best kept on held-out training images "
                        "(as make train-default)")
    p.add_argument("--crop-views", type=int, default=8,
                   help="random-crop views per training image (as make train-default)")
    args = p.parse_args(argv)
    root = Path(args.flickr8k)
    if not (root / "captions.csv").exists():
        print(f"skipped: Flickr8k not found at {root} (set --flickr8k or CROSSBIT_FLICKR8K)")
        return 0

    from crossbit.encoders.config import ModelConfig
    from crossbit.encoders.model import DEFAULT_MODEL_DIR, HashModel
    from crossbit.encoders.runtime import use_image_runtime
    from crossbit.encoders.training import TrainConfig
    from crossbit.encoders.training.datasets import load_captions_csv
    from crossbit.encoders.training.evaluate import encode_pairs, evaluate_encoded, recall_sum
    from crossbit.encoders.training.recipes import train_model

    train = load_captions_csv(root / "captions.csv", root / "images", root / "train.txt")
    dev = load_captions_csv(root / "captions.csv", root / "images", root / "dev.txt")
    rows = {}
    for bits in args.bits:
        directory = DEFAULT_MODEL_DIR if bits == 64 and not args.retrain_64 else \
            Path(args.runs) / f"flickr8k-{bits}"
        start = time.perf_counter()
        if directory != DEFAULT_MODEL_DIR:
            config = ModelConfig(bits=bits, dropout=0.3)
            train_model(config, TrainConfig(weight_decay=1e-4, seeds=args.seeds,
                                            crop_views=args.crop_views),
                        train, 500, directory, args.cache, progress=False, init="none",
                        keep_trained=True)
        train_s = time.perf_counter() - start
        model = HashModel.load(directory)
        use_image_runtime(model)
        images, texts = encode_pairs(model, dev, args.cache, progress=False)
        report = evaluate_encoded(images, texts, dev.caption_image, bits, curves=False)
        rows[bits] = {"model": str(directory), "train_s": round(train_s, 1),
                      "text_to_image": report["text_to_image"],
                      "image_to_text": report["image_to_text"], "float": report["float"],
                      "asymmetric": report["asymmetric"], "rsum": recall_sum(report),
                      "asymmetric_rsum": recall_sum(report["asymmetric"]),
                      "float_rsum": recall_sum(report["float"])}
        r = rows[bits]
        print(f"{bits:4d} bits  R@sum {r['rsum']:.1f}  (asymmetric {r['asymmetric_rsum']:.1f}, "
              f"float {r['float_rsum']:.1f})  "
              f"{directory}", flush=True)
    result = {"what": "Flickr8k dev (1,000 images x 5,000 captions), heads on frozen "
                      "EfficientNet-Lite0 + MiniLM-L6 features; ties = expected value",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
              "python": sys.version.split()[0],
              "date": time.strftime("%Y-%m-%d"), "rows": rows, "published": PUBLISHED}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = ["| model | image->text R@1/5/10 | text->image R@1/5/10 | mAP i->t / t->i |",
             "|---|---|---|---|"]

    def fmt(m):
        return "/".join(f"{m[f'recall@{k}']:.1f}" for k in (1, 5, 10))

    for bits, r in sorted(result["rows"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| crossbit {bits}-bit codes | {fmt(r['image_to_text'])} | "
                     f"{fmt(r['text_to_image'])} | {r['image_to_text']['map']:.1f} / "
                     f"{r['text_to_image']['map']:.1f} |")
    for bits, r in sorted(result["rows"].items(), key=lambda kv: int(kv[0])):
        a = r["asymmetric"]
        lines.append(f"| crossbit {bits}-bit codes, asymmetric (float query vs stored codes) | "
                     f"{fmt(a['image_to_text'])} | {fmt(a['text_to_image'])} | "
                     f"{a['image_to_text']['map']:.1f} / {a['text_to_image']['map']:.1f} |")
    for bits, r in sorted(result["rows"].items(), key=lambda kv: int(kv[0])):
        f = r["float"]
        lines.append(f"| crossbit {bits}-bit model, float tanh embeddings (cosine) | "
                     f"{fmt(f['image_to_text'])} | {fmt(f['text_to_image'])} | "
                     f"{f['image_to_text']['map']:.1f} / {f['text_to_image']['map']:.1f} |")
    for name, (i2t, t2i) in result["published"].items():
        lines.append(f"| {name} (real-valued, 1K test) | {'/'.join(map(str, i2t))} | "
                     f"{'/'.join(map(str, t2i))} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
