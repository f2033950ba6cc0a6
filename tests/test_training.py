"""Datasets, training and the evaluate command on data the tests make themselves."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from crossbit.encoders.config import ModelConfig
from crossbit.encoders.model import HashModel
from crossbit.encoders.training import (
    FeatureSet,
    TrainConfig,
    finetune,
    train_heads,
    train_teacher,
)
from crossbit.encoders.training.datasets import (
    DatasetError,
    load_captions_csv,
    load_coco_captions,
    load_karpathy,
    load_multilabel_csv,
)
from crossbit.server.cli import main

from helpers import make_synthetic


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    pairs = make_synthetic(root, n_images=60, seed=0)
    return root, pairs


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_captions_csv_split_and_errors(synthetic, tmp_path):
    root, pairs = synthetic
    assert len(pairs.images) == 60 and len(pairs.captions) == 120
    split = tmp_path / "split.txt"
    split.write_text("0000.png\n0003.png\n")
    part = load_captions_csv(root / "captions.csv", root / "images", split)
    assert len(part.images) == 2 and len(part.captions) == 4
    assert part.caption_image.tolist() == [0, 0, 1, 1]  # two captions each, in image order
    bad = tmp_path / "bad.csv"
    write_csv(bad, [("file", "text"), ("0000.png", "x")])
    with pytest.raises(DatasetError, match=r"bad.csv: expected columns 'image,caption'"):
        load_captions_csv(bad, root / "images")
    missing = tmp_path / "missing.csv"
    write_csv(missing, [("image", "caption"), ("0000.png", "fine"), ("nope.png", "x"),
                        ("0001.png", "  ")])
    with pytest.raises(DatasetError, match=r"missing.csv, row 3: image file not found"):
        load_captions_csv(missing, root / "images")
    skipped = load_captions_csv(missing, root / "images", skip_bad=True)
    assert skipped.skipped == 2 and len(skipped.captions) == 1
    with pytest.raises(FileNotFoundError):
        load_captions_csv(missing, tmp_path / "no-such-folder")


def test_coco_karpathy_and_multilabel(synthetic, tmp_path):
    root, _ = synthetic
    coco = {"images": [{"id": 7, "file_name": "0001.png"}, {"id": 9, "file_name": "0002.png"}],
            "annotations": [{"image_id": 7, "id": 1, "caption": "a shape"},
                            {"image_id": 9, "id": 2, "caption": "another shape"},
                            {"image_id": 7, "id": 3, "caption": "the first shape again"}]}
    (tmp_path / "captions_val.json").write_text(json.dumps(coco))
    p = load_coco_captions(tmp_path / "captions_val.json", root / "images")
    assert len(p.images) == 2 and list(p.caption_image) == [0, 1, 0]
    coco["annotations"].append({"image_id": 99, "id": 4, "caption": "orphan"})
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="image_id 99"):
        load_coco_captions(tmp_path / "bad.json", root / "images")
    karpathy = {"images": [
        {"filepath": "", "filename": "0001.png", "split": "test",
         "sentences": [{"raw": "one"}, {"raw": "two"}]},
        {"filepath": "", "filename": "0002.png", "split": "train", "sentences": [{"raw": "x"}]},
        {"filepath": "", "filename": "0003.png", "split": "restval", "sentences": [{"raw": "y"}]}]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(karpathy))
    test = load_karpathy(tmp_path / "dataset_flickr30k.json", root / "images", "test")
    train = load_karpathy(tmp_path / "dataset_flickr30k.json", root / "images", "train")
    assert len(test.captions) == 2 and len(train.images) == 2
    labelled = load_multilabel_csv(root / "labels.csv", root / "images")
    assert labelled.labels.shape[0] == 60 and labelled.labels.sum(axis=1).min() == 3
    assert "circle" in labelled.label_names or "square" in labelled.label_names


def _features(n=64, d=12, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    images = latent @ rng.normal(size=(6, d)) + 0.1 * rng.normal(size=(n, d))
    caption_image = np.repeat(np.arange(n), 2)
    texts = latent[caption_image] @ rng.normal(size=(6, d)) + 0.1 * rng.normal(size=(2 * n, d))
    return FeatureSet(images.astype(np.float32), texts.astype(np.float32), caption_image)


@pytest.mark.parametrize("objective", ["infonce", "triplet"])
def test_training_learns_and_is_reproducible(objective):
    data, dev = _features(seed=0), _features(seed=0)

    def run():
        m = HashModel(ModelConfig(bits=16, image_feature_dim=12, text_feature_dim=12, hidden=32,
                                  semantics=False))
        result = train_heads(m, data, dev, TrainConfig(objective=objective, epochs=40,
                                                       batch_size=16, patience=50),
                             progress=False)
        return m, result.report

    m1, r1 = run()
    m2, _ = run()
    for a, b in zip(m1.image_head.state_dict().values(), m2.image_head.state_dict().values()):
        assert torch.equal(a, b)  # same seed, same weights
    # 64 images: chance R@10 is about 16%; a trained model finds most pairs
    assert r1["text_to_image"]["recall@10"] > 40


def test_several_seeds_keep_the_best_on_held_out_images():
    from crossbit.encoders.training.evaluate import recall_sum
    from crossbit.encoders.training.recipes import train_seeds

    data, held = _features(seed=0), _features(seed=0)

    def model():
        return HashModel(ModelConfig(bits=16, image_feature_dim=12, text_feature_dim=12,
                                     hidden=32, semantics=False))

    cfg = TrainConfig(epochs=6, batch_size=16, patience=50, seed=3, seeds=3)
    m = model()
    kept = train_seeds(m, data, held, cfg, progress=False)
    report = kept.report
    scores = [s["heldout_rsum"] for s in kept.seed_scores]
    assert [s["seed"] for s in kept.seed_scores] == [3, 4, 5]
    assert recall_sum(report) == max(scores) and kept.seed == 3 + scores.index(max(scores))
    assert kept.teacher_heldout_rsum > 0  # distillation is on by default: one teacher for all
    again = model()  # the kept weights are that seed's own, taught by the same teacher
    teacher, _ = train_teacher(again, data, held, cfg, progress=False)
    train_heads(again, data, held, TrainConfig(epochs=6, batch_size=16, patience=50,
                                               seed=kept.seed), progress=False, teacher=teacher)
    for a, b in zip(m.text_head.state_dict().values(), again.text_head.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="held-out"):
        train_seeds(model(), data, None, cfg, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        TrainConfig(seeds=0)


def test_distillation_and_all_captions_change_training_and_are_optional():
    data, dev = _features(seed=0), _features(seed=0)
    m = HashModel(ModelConfig(bits=16, image_feature_dim=12, text_feature_dim=12, hidden=32,
                              semantics=False))
    cfg = TrainConfig(epochs=8, batch_size=16, patience=50, teacher_dim=64)
    teacher, score = train_teacher(m, data, dev, cfg, progress=False)
    assert teacher.images.shape == (64, 64) and teacher.texts.shape == (128, 64)
    assert teacher.image_views is None and score > 0

    histories = []

    def weights(cfg, teacher=None):
        histories.append(train_heads(m, data, dev, cfg, progress=False, teacher=teacher).history)
        return torch.cat([p.detach().flatten() for p in m.image_head.parameters()])

    taught = weights(cfg, teacher)
    assert "distill" in histories[-1][0]
    plain = TrainConfig(epochs=8, batch_size=16, patience=50, distill=0.0)
    untaught = weights(plain, teacher)  # distill=0 ignores a teacher
    assert "distill" not in histories[-1][0]
    assert not torch.equal(taught, untaught)
    assert torch.equal(untaught, weights(TrainConfig(epochs=8, batch_size=16, patience=50,
                                                     distill=0.0)))
    one = TrainConfig(epochs=8, batch_size=16, patience=50, distill=0.0, all_captions=False)
    assert not torch.equal(untaught, weights(one))
    assert not TrainConfig(objective="dcmh").uses_teacher
    with pytest.raises(ValueError, match="distill"):
        TrainConfig(distill=-1)
    with pytest.raises(ValueError, match="crop_views"):
        TrainConfig(crop_views=-1)


def test_dcmh_objective_needs_labels():
    data = _features()
    labels = (np.random.default_rng(0).random((64, 3)) < 0.5).astype(np.float32)
    labelled = FeatureSet(data.images, data.texts, data.caption_image, labels=labels)
    m = HashModel(ModelConfig(bits=16, image_feature_dim=12, text_feature_dim=12, hidden=0,
                              semantics=False))
    result = train_heads(m, labelled, labelled, TrainConfig(objective="dcmh", epochs=3,
                                                            batch_size=16), progress=False)
    assert result.report["relevance"] == "shared label"
    with pytest.raises(ValueError, match="needs labels"):
        train_heads(m, data, None, TrainConfig(objective="dcmh", epochs=1, batch_size=16),
                    progress=False)


@pytest.mark.parametrize("crop_views", [0, 1])  # 1: a fresh random crop of each image
def test_finetune_runs_end_to_end(synthetic, crop_views):
    _, pairs = synthetic
    model = HashModel(ModelConfig(bits=16, image_backbone="resnet18", image_feature_dim=512,
                                  hidden=16, semantics=False))
    report = finetune(model, pairs, None, TrainConfig(batch_size=4, epochs=1,
                                                      crop_views=crop_views),
                      max_steps=2, progress=False).report
    assert report["steps"] == 2 and np.isfinite(report["rank"])


def test_train_and_evaluate_commands(synthetic, tmp_path, capsys):
    root, _ = synthetic
    out = tmp_path / "model"
    assert main(["train", "--captions", str(root / "captions.csv"), "--images",
                 str(root / "images"), "--out", str(out), "--bits", "32", "--epochs", "4",
                 "--val-images", "20", "--batch-size", "16", "--crop-views", "2", "--cache",
                 str(tmp_path / "cache"), "--keep-trained"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["bits"] == 32 and config["extra"]["data"]["val_images"] == 20
    assert config["extra"]["training"]["crop_views"] == 2
    held_out = config["extra"]["held_out"]  # the early-stopping images' figures
    assert held_out["images"] == 20 and held_out["bits"] == 32
    assert 0 <= held_out["text_to_image"]["recall@10"] <= 100
    # the one-line summary puts the shipped model beside the new one, on the same images
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("held-out")]
    assert len(summary) == 1 and "the shipped model on the same images" in summary[0]
    assert held_out["shipped_model"]["images"] == 20 and held_out["shipped_model"]["bits"] == 64
    cached = [np.load(f) for f in sorted((tmp_path / "cache").glob("img-*.npy"))]
    assert len(cached) == 4  # the images, mirrored, two crop views: all different
    assert all(a.shape == cached[0].shape for a in cached)
    assert len({a.tobytes() for a in cached}) == 4
    split = tmp_path / "split.txt"
    split.write_text("\n".join(f"{i:04d}.png" for i in range(20)))
    report_path = tmp_path / "report.json"
    assert main(["evaluate", "--captions", str(root / "captions.csv"), "--images",
                 str(root / "images"), "--split", str(split), "--model", str(out),
                 "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["bits"] == 32 and report["images"] == 20 and report["captions"] == 40
    for block in (report, report["float"]):
        for direction in ("text_to_image", "image_to_text"):
            assert set(block[direction]) >= {"recall@1", "recall@5", "recall@10",
                                              "median_rank", "map"}
            assert 0 <= block[direction]["recall@10"] <= 100
    assert len(report["pr_curve"]["text_to_image"]["precision"]) == 33
    assert report["speed"]["texts_per_s_batched"] > 0
    for plot in report["plots"]:
        assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_random_crop_views_are_reproducible_crops_within_bounds():
    from PIL import Image

    from crossbit.encoders.backbones import CROP_SCALE, random_crop

    image = Image.fromarray(np.arange(224 * 224 * 3, dtype=np.uint32).reshape(224, 224, 3)
                            .astype(np.uint8))
    for k in range(20):
        a = random_crop(image, np.random.default_rng([k, 7]))
        b = random_crop(image, np.random.default_rng([k, 7]))
        assert a.size == b.size and a.tobytes() == b.tobytes()
        w, h = a.size
        assert 0 < w <= 224 and 0 < h <= 224
        assert CROP_SCALE[0] * 0.8 <= w * h / 224 ** 2 <= 1.0  # (the aspect clip trims a little)
    sizes = {random_crop(image, np.random.default_rng([k, 7])).size for k in range(20)}
    assert len(sizes) > 10


def test_image_views_are_drawn_in_training_and_taught_by_the_teacher():
    data, dev = _features(seed=0), _features(seed=0)
    rng = np.random.default_rng(1)
    views = np.stack([data.images + 0.3 * rng.normal(size=data.images.shape).astype(np.float32)
                      for _ in range(3)])
    viewed = FeatureSet(data.images, data.texts, data.caption_image, image_views=views)
    m = HashModel(ModelConfig(bits=16, image_feature_dim=12, text_feature_dim=12, hidden=32,
                              semantics=False))
    cfg = TrainConfig(epochs=10, batch_size=16, patience=50, teacher_dim=32, crop_views=2)
    teacher, _ = train_teacher(m, viewed, dev, cfg, progress=False)
    assert teacher.image_views.shape == (3, 64, 32)

    def weights(features, cfg):
        report = train_heads(m, features, dev, cfg, progress=False, teacher=teacher).report
        assert report["text_to_image"]["recall@10"] > 25  # chance: 15.6
        return torch.cat([p.detach().flatten() for p in m.image_head.parameters()])

    with_views = weights(viewed, cfg)
    assert torch.equal(with_views, weights(viewed, cfg))  # reproducible
    plain = TrainConfig(epochs=10, batch_size=16, patience=50, teacher_dim=32, flip=False)
    assert not torch.equal(with_views, weights(viewed, plain))  # views off: not drawn
    assert torch.equal(weights(viewed, plain), weights(data, plain))
