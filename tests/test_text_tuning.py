"""crossbit train --tune-text: the text encoder tuned with the heads, saved, loaded and exported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossbit.encoders.model import HashModel
from crossbit.encoders.runtime import use_text_runtime
from crossbit.encoders.text_models import TextEncoder, text_model_id
from crossbit.encoders.training import TrainConfig
from crossbit.server.cli import main

from helpers import make_synthetic

CAPTIONS = ["a red circle on a blue background", "green picture with a white square", "x"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    make_synthetic(root / "data", n_images=60, seed=1)
    out = root / "model"
    args = ["train", "--captions", str(root / "data" / "captions.csv"), "--images",
            str(root / "data" / "images"), "--out", str(out), "--bits", "32", "--epochs", "3",
            "--val-images", "0", "--batch-size", "16", "--cache", str(root / "cache"),
            "--tune-text", "--tune-epochs", "2", "--text-lr", "1e-4", "--keep-trained"]
    assert main(args) == 0  # nothing held out: fixed epochs, the last weights kept (unchecked)
    return root, out, args


def changed_tensors(model: HashModel) -> list[str]:
    tuned, base = model.text_encoder.model.state_dict(), TextEncoder("minilm-l6").model.state_dict()
    return [k for k in base if not torch.equal(tuned[k], base[k])]


def test_tuning_changes_the_text_encoder_and_saves_it(tuned):
    _, out, _ = tuned
    config = json.loads((out / "config.json").read_text())
    assert config["text_model"] == "text_model" and (out / "text_model" / "config.json").exists()
    assert config["extra"]["training"]["tune_text"] is True
    assert [h["epoch"] for h in config["extra"]["results"]["history"]] == [1, 2]
    changed = changed_tensors(HashModel.load(out))
    assert changed and not any("word_embeddings" in k for k in changed)  # embeddings stay


def test_early_stopping_keeps_the_best_epoch_counting_the_start(tuned, tmp_path):
    root, out, args = tuned
    held = tmp_path / "held"
    args = [str(held) if a == str(out) else a for a in args]
    args[args.index("--val-images") + 1] = "20"
    assert main(args) == 0
    config = json.loads((held / "config.json").read_text())
    history = config["extra"]["results"]["history"]
    assert history[0]["epoch"] == 0 and len(history) >= 2  # before tuning, then each epoch
    kept = config["extra"]["held_out"]
    rsum = sum(kept[d][f"recall@{k}"] for d in ("text_to_image", "image_to_text") for k in (1, 5, 10))
    best = max(history, key=lambda h: h["dev_rsum"])
    assert rsum == pytest.approx(best["dev_rsum"])  # the kept weights are the best epoch's
    assert bool(changed_tensors(HashModel.load(held))) == (best["epoch"] > 0)


def test_onnx_runtimes_carry_the_tuned_weights(tuned):
    _, out, _ = tuned
    model = HashModel.load(out)
    with torch.no_grad():
        eager = model.text_features(CAPTIONS).numpy()
        base = TextEncoder("minilm-l6")(CAPTIONS).numpy()
    assert np.abs(eager - base).max() > 1e-3  # the tuned encoder is not the base one
    use_text_runtime(model, "onnx")
    np.testing.assert_allclose(model.text_features(CAPTIONS).numpy(), eager, atol=2e-4)
    use_text_runtime(model, "auto")  # a tuned model is not on the int8 list: fp32
    assert model.text_runtime.precision == "fp32"


def test_text_model_id_changes_when_the_weights_are_written_again(tuned, tmp_path):
    _, out, _ = tuned
    copy = tmp_path / "text"
    model = HashModel.load(out)
    model.text_encoder.model.save_pretrained(copy)
    model.text_encoder.tokenizer.save_pretrained(copy)
    before = text_model_id(str(copy))
    with torch.no_grad():
        next(model.text_encoder.model.parameters()).add_(1.0)
    model.text_encoder.model.save_pretrained(copy)
    assert text_model_id(str(copy)) != before and text_model_id("minilm-l6") == "minilm-l6"


def test_init_tunes_a_trained_model_without_training_heads_again(tuned, tmp_path):
    root, out, args = tuned
    again = tmp_path / "again"
    assert main([*[a if a != str(out) else str(again) for a in args], "--init", str(out)]) == 0
    config = json.loads((again / "config.json").read_text())
    assert config["bits"] == 32 and config["text_model"] == "text_model"
    with pytest.raises(ValueError, match="exclude each other"):
        TrainConfig(tune_text=True, finetune=True)


def test_the_fingerprint_counts_the_tuned_text_weights(tuned, tmp_path):
    import shutil

    _, out, _ = tuned
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    original = HashModel.load(out).fingerprint()["fingerprint"]
    assert HashModel.load(copy).fingerprint()["fingerprint"] == original  # a copy is the same model
    model = HashModel.load(copy)
    with torch.no_grad():  # other text weights, the same heads: other codes, another model
        next(model.text_encoder.model.parameters()).add_(0.5)
    model.text_encoder.model.save_pretrained(copy / "text_model")
    assert HashModel.load(copy).fingerprint()["fingerprint"] != original
