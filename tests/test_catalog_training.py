"""Training on one's own catalog: the warm start, defaults from the data size, the rule that
writes the better model, replay, and what crossbit train says about them."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import torch

from crossbit.encoders.config import ModelConfig
from crossbit.encoders.model import HashModel
from crossbit.encoders.training import FeatureSet, TrainConfig, train_heads
from crossbit.encoders.training.catalog import (
    compare,
    differences,
    plan_for,
    verdict_line,
    with_replay,
)
from crossbit.encoders.training.evaluate import recall_sum
from crossbit.encoders.training.recipes import fit_and_judge, held_out_report
from crossbit.server.cli import main

from helpers import make_synthetic


def features(n=80, seed=0, shift=0.0):
    """Images and two captions each from a shared latent; ``shift`` moves the images' domain."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    mix = np.random.default_rng(100).normal(size=(6, 12))  # the same maps for every draw
    text_mix = np.random.default_rng(101).normal(size=(6, 12))
    images = latent @ mix + 0.1 * rng.normal(size=(n, 12)) + shift
    caption_image = np.repeat(np.arange(n), 2)
    texts = latent[caption_image] @ text_mix + 0.1 * rng.normal(size=(2 * n, 12))
    return FeatureSet(images.astype(np.float32), texts.astype(np.float32), caption_image)


def small_model():
    return HashModel(ModelConfig(bits=16, image_feature_dim=12, text_feature_dim=12, hidden=32,
                                 semantics=False))


CFG = TrainConfig(epochs=30, batch_size=16, patience=50, distill=0.0)


@pytest.fixture(scope="module")
def trained():
    """A model trained on one draw of the synthetic domain, and a held-out draw of it."""
    model = small_model()
    train_heads(model, features(seed=0), features(seed=1), CFG, progress=False)
    return model, features(seed=1)


def state(model):
    return [copy.deepcopy(h.state_dict()) for h in (model.image_head, model.text_head)]


def test_the_plan_follows_the_data_size_and_keeps_what_is_given():
    small = plan_for(200)
    assert (small.val_images, small.batch_size, small.epochs, small.lr, small.patience) == \
        (50, 32, 60, 5e-4, 8)
    assert set(small.chosen) == {"val_images", "batch_size", "epochs", "lr", "patience"}
    assert plan_for(1_000).batch_size == 128 and plan_for(500).batch_size == 64
    given = plan_for(2_000, val_images=0, lr=1e-3, batch_size=16)
    assert (given.val_images, given.lr, given.batch_size) == (0, 1e-3, 16)
    assert set(given.chosen) == {"epochs", "patience"}
    line = given.describe(2_000)
    assert "nothing held out" in line and "--epochs, --patience chosen for 2000 images" in line
    assert plan_for(30).val_images == 0


def test_a_warm_start_begins_from_the_model_and_counts_it_as_epoch_zero(trained):
    start, held = trained
    model = copy.deepcopy(start)
    before = state(start)
    start_rsum = recall_sum(held_out_report(start, held))
    result = train_heads(model, features(seed=2), held, TrainConfig(epochs=2, batch_size=16,
                                                                    distill=0.0, lr=0.5),
                         progress=False, warm=True)
    assert result.history[0]["epoch"] == 0
    assert result.history[0]["dev_rsum"] == pytest.approx(start_rsum)
    assert recall_sum(result.report) >= start_rsum  # a lr of 0.5 wrecks the heads...
    for a, b in zip(state(model), before):  # ...so the starting weights are the ones kept
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the input statistics are the starting model's (warm), the new data's (fresh)
    shifted = features(seed=2, shift=3.0)
    warm = copy.deepcopy(start)
    train_heads(warm, shifted, None, TrainConfig(epochs=1, batch_size=16, distill=0.0),
                progress=False, warm=True)
    assert torch.equal(warm.image_head.mean, start.image_head.mean)
    train_heads(warm, shifted, None, TrainConfig(epochs=1, batch_size=16, distill=0.0),
                progress=False)
    assert torch.allclose(warm.image_head.mean, torch.as_tensor(shifted.images.mean(0)))


def test_a_warm_start_keeps_what_the_model_knew_where_fresh_heads_do_not(trained):
    start, held = trained
    little = features(n=32, seed=3)  # two batches of new pairs, one epoch
    cfg = TrainConfig(epochs=1, batch_size=16, distill=0.0)
    warm, fresh = copy.deepcopy(start), small_model()
    train_heads(warm, little, None, cfg, progress=False, warm=True)
    train_heads(fresh, little, None, cfg, progress=False)
    chance = 2 * 100 * (1 + 5 + 10) / len(held.images)
    assert recall_sum(held_out_report(warm, held)) > 2 * chance
    assert recall_sum(held_out_report(fresh, held)) < recall_sum(held_out_report(warm, held)) - 50


def test_the_comparison_agrees_with_the_report_and_wants_a_real_gain(trained):
    start, held = trained
    same = compare(start, copy.deepcopy(start), held)
    assert same.gain == 0 and not same.keep_trained  # a tie keeps the starting model
    assert verdict_line(same, "start", "reference", "out")[0].startswith(
        "kept start: no epoch of training beat it on the 80 held-out images")
    assert same.trained_rsum == pytest.approx(recall_sum(held_out_report(start, held)))
    fresh = small_model()  # untrained heads: near chance
    better = compare(start, fresh, held)
    assert better.reference_rsum == pytest.approx(recall_sum(held_out_report(fresh, held)))
    assert better.keep_trained and better.low > 0 and better.low <= better.gain <= better.high
    worse = compare(fresh, start, held)
    assert not worse.keep_trained and worse.high < 0
    line, warning = verdict_line(worse, "good", "reference", "out")
    assert line.startswith("kept good") and "--keep-trained" in line and not warning
    line, warning = verdict_line(worse, "good", "trained", "out")
    assert warning and "does not beat good" in line
    assert verdict_line(better, "old", "trained", "out") == (
        f"wrote the trained model: it beats old: Hamming R@sum {better.trained_rsum:.1f} against "
        f"{better.reference_rsum:.1f} for old on the 80 held-out images ({better.gain:+.1f}; "
        f"{better.low:+.1f} to {better.high:+.1f} in 90% of resamples of those images)", False)


def test_the_better_model_is_written_unless_told(trained):
    start, _ = trained
    data = features(n=120, seed=4)
    held = np.arange(100, 120)
    cfg = TrainConfig(epochs=1, batch_size=16, distill=0.0, lr=1e-5)  # learns next to nothing
    outcome = fit_and_judge(small_model(), False, data, held, cfg, start, "good", progress=False)
    assert outcome.written == "reference" and outcome.model is start
    assert outcome.verdict.gain < 0
    assert recall_sum(outcome.result.report) == pytest.approx(outcome.verdict.reference_rsum)
    told = fit_and_judge(small_model(), False, data, held, cfg, start, "good",
                         keep_trained=True, progress=False)
    assert told.written == "trained" and told.model is not start and told.verdict.gain < 0
    alone = fit_and_judge(small_model(), False, data, held, cfg, progress=False)
    assert alone.written == "trained" and alone.verdict is None


def test_replay_mixes_in_its_share_of_images():
    mine, theirs = features(n=30, seed=5), features(n=100, seed=6)
    mixed = with_replay(mine, theirs, 0.5, seed=0)
    assert len(mixed.images) == 60 and len(mixed.texts) == 120
    assert np.array_equal(mixed.images[:30], mine.images)
    rows = mixed.caption_image[60:]  # the replayed captions point at the replayed images
    assert rows.min() == 30 and rows.max() == 59
    for j, i in zip(range(60, 120), rows):
        k = np.flatnonzero((theirs.images == mixed.images[i]).all(1))[0]
        assert any((theirs.texts[theirs.caption_image == k] == mixed.texts[j]).all(1))
    assert len(with_replay(mine, theirs, 0.25, seed=0).images) == 40
    with pytest.raises(ValueError, match="between 0 and 1"):
        with_replay(mine, theirs, 1.0, seed=0)


def test_differences_name_the_architecture():
    a, b = ModelConfig(bits=64), ModelConfig(bits=32, text_model="/x/minilm-l6")
    assert differences(a, b) == ["bits"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    make_synthetic(root / "data", n_images=60, seed=2)
    base = ["train", "--captions", str(root / "data" / "captions.csv"), "--images",
            str(root / "data" / "images"), "--cache", str(root / "cache"), "--val-images", "20"]
    good = root / "good"  # fresh 16-bit heads trained well: a model to start from
    assert main([*base, "--out", str(good), "--bits", "16", "--epochs", "40",
                 "--distill", "0", "--keep-trained"]) == 0  # whatever the shipped model scores
    return root, base, good


def extra(folder):
    return json.loads((folder / "config.json").read_text())["extra"]


def test_train_starts_from_a_model_and_writes_it_back_when_training_does_not_beat_it(
        catalog, tmp_path, capsys, caplog):
    root, base, good = catalog
    capsys.readouterr()
    wrecked = [*base, "--init", str(good), "--epochs", "3", "--lr", "2", "--distill", "0"]
    assert main([*wrecked, "--out", str(tmp_path / "kept")]) == 0
    out = capsys.readouterr().out
    assert f"heads start from the heads of {good}" in out
    assert f"kept {good}: no epoch of training beat it on the 20 held-out images" in out
    written, source = HashModel.load(tmp_path / "kept"), HashModel.load(good)
    assert written.fingerprint()["fingerprint"] == source.fingerprint()["fingerprint"]
    assert extra(tmp_path / "kept")["written"] == "reference"
    with caplog.at_level(logging.WARNING):
        assert main([*wrecked, "--keep-trained", "--out", str(tmp_path / "told")]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"the trained model does not beat {good}" in m for m in warned)
    assert extra(tmp_path / "told")["written"] == "trained"


def test_train_starts_from_the_shipped_model_by_default_and_says_what_it_wrote(
        catalog, tmp_path, capsys):
    root, base, _ = catalog
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "m"), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "20 images held out for early stopping and the final comparison; batches of 32" in out
    assert "heads start from the shipped model's heads" in out
    notes = extra(tmp_path / "m")
    assert notes["start"] == "default" and notes["verdict"]["reference"] == "default"
    shipped = HashModel.load().fingerprint()["fingerprint"]
    mine = HashModel.load(tmp_path / "m").fingerprint()["fingerprint"]
    if notes["written"] == "reference":  # what it says is what it wrote
        assert "kept default" in out and mine == shipped
    else:
        assert "wrote the trained model: it beats default" in out and mine != shipped
        assert notes["verdict"]["gain_90pct"][0] > 0


def test_train_replays_the_starting_models_data_when_given(catalog, tmp_path, capsys):
    root, base, good = catalog
    other = make_synthetic(tmp_path / "old", n_images=40, seed=7)
    capsys.readouterr()
    assert main([*base, "--init", str(good), "--epochs", "2", "--out", str(tmp_path / "m"),
                 "--replay", str(tmp_path / "old" / "captions.csv"), "--replay-images",
                 str(tmp_path / "old" / "images"), "--replay-share", "0.25"]) == 0
    out = capsys.readouterr().out
    assert f"replay: {len(other.images)} images of {tmp_path / 'old' / 'captions.csv'} " \
           "available, 25% of each epoch's images drawn from them" in out
    # the replayed images went through the feature cache beside the catalog's own
    names = {f.name for f in (root / "cache").glob("img-*.npy")}
    assert len(names) == 4  # the catalog and the replay data, each as itself and mirrored


@pytest.mark.parametrize("flags, message", [
    (["--tune-text", "--finetune"], "--tune-text and --finetune exclude each other"),
    (["--finetune", "--init", "default"], "--init starts heads training or --tune-text"),
    (["--replay", "x.csv"], "--replay needs --replay-images"),
    (["--replay-share", "1"], "--replay-share must be between 0 and 1"),
    (["--seeds", "2", "--val-images", "0"], "--seeds above 1"),
    (["--crop-views", "-1"], "--crop-views must be >= 0"),
    (["--val-images", "5"], "--val-images 5: at least 20 images"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["--dropout", "2"], "--dropout must be in [0, 1)"),
])
def test_refusals_speak_in_flags(flags, message, tmp_path, capsys):
    args = ["train", "--captions", "none.csv", "--images", str(tmp_path), "--out",
            str(tmp_path / "m"), *flags]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "tune_text" not in err and "val_images" not in err



def test_other_heads_are_still_compared_with_the_shipped_model(catalog, tmp_path, capsys):
    """Heads of another shape (--hidden) read the same backbone features as the shipped
    model: the comparison is made, and the better model written."""
    root, base, _ = catalog
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "m"), "--hidden", "256", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "heads start from fresh heads: the shipped model differs in --hidden" in out
    assert "no comparison" not in out
    notes = extra(tmp_path / "m")
    assert notes["verdict"]["reference"] == "default"
    shipped = HashModel.load().fingerprint()["fingerprint"]
    mine = HashModel.load(tmp_path / "m").fingerprint()["fingerprint"]
    assert (mine == shipped) == (notes["written"] == "reference")


def test_nothing_held_out_is_refused_unless_keep_trained(tmp_path, capsys, caplog):
    """A catalog too small to hold images out (or --val-images 0) cannot be checked against
    the shipped model: refused in flag words before any training, and written unchecked,
    with a warning, only with --keep-trained."""
    make_synthetic(tmp_path / "small", n_images=30, seed=4)
    args = ["train", "--captions", str(tmp_path / "small" / "captions.csv"), "--images",
            str(tmp_path / "small" / "images"), "--cache", str(tmp_path / "cache"),
            "--epochs", "2"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err
    assert "cannot be checked against default" in err and "--keep-trained" in err
    assert "val_images" not in err and not (tmp_path / "refused").exists()
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--keep-trained", "--out", str(tmp_path / "told")]) == 0
    assert any("written unchecked" in r.getMessage() for r in caplog.records)
    assert extra(tmp_path / "told")["written"] == "trained"
    assert main([*args, "--seeds", "2", "--out", str(tmp_path / "seeds")]) == 1
    assert "none are held out from 30 images: give --val-images 20" in capsys.readouterr().err


def test_a_result_is_whole_without_the_init_folder(catalog, tmp_path, capsys):
    """A model started from a folder with its own text model (--tune-text writes one) is
    written with its text model, so it loads when the --init folder is gone."""
    import shutil

    root, base, _ = catalog
    tuned = tmp_path / "tuned"
    assert main([*base, "--out", str(tuned), "--tune-text", "--tune-epochs", "1",
                 "--tune-rounds", "1", "--epochs", "1", "--keep-trained"]) == 0
    config = json.loads((tuned / "config.json").read_text())
    assert "heads_verdict" in json.dumps(config)  # the heads were judged before tuning
    moved = tmp_path / "moved"
    shutil.copytree(tuned, moved)
    assert main([*base, "--out", str(tmp_path / "again"), "--init", str(moved), "--epochs", "1"]) == 0
    shutil.rmtree(moved)
    shutil.rmtree(tuned)
    again = HashModel.load(tmp_path / "again")
    assert (tmp_path / "again" / "text_model").is_dir() and again.encode_texts(["a red circle"])


def test_replay_never_holds_the_catalogs_own_images(tmp_path):
    """Replay data that shares images with the catalog (a catalog drawn from the shipped
    model's own training split) leaves those images out: the held-out ones judge the result."""
    from crossbit.encoders.training.datasets import Pairs
    from crossbit.encoders.training.recipes import without_images

    catalog = [str(tmp_path / f"{n}.jpg") for n in range(5)]
    replay = Pairs([str(tmp_path / "x" / ".." / "3.jpg"), str(tmp_path / "9.jpg"), catalog[0]],
                   ["three", "nine", "zero", "nine again"], [0, 1, 2, 1])
    said = []
    kept = without_images(replay, catalog, said.append)
    assert kept.images == [str(tmp_path / "9.jpg")] and kept.captions == ["nine", "nine again"]
    assert "2 of its images are in the catalog too" in said[0]
    assert without_images(replay, [], said.append) is replay
    assert without_images(Pairs([catalog[1]], ["one"], [0]), catalog, said.append) is None
