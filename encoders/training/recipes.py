"""End-to-end recipes behind ``crossbit train`` and ``crossbit evaluate``: load, cache, train, score."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from crossbit.encoders.config import ModelConfig
from crossbit.encoders.model import HashModel
from crossbit.encoders.runtime import use_image_runtime
from crossbit.encoders.text_models import list_text_models as text_model_names
from crossbit.encoders.training.catalog import (
    MIN_HELD_OUT,
    Verdict,
    choose_start,
    comparable,
    compare,
    reference_model,
    verdict_line,
    with_replay,
)
from crossbit.encoders.training.checkpoint import save_checkpoint
from crossbit.encoders.training.datasets import (
    Pairs,
    load_captions_csv,
    load_coco_captions,
    load_karpathy,
    load_multilabel_csv,
)
from crossbit.encoders.training.evaluate import recall_sum
from crossbit.encoders.training.feature_cache import FeatureSet, image_features, text_features
from crossbit.encoders.training.finetune import finetune
from crossbit.encoders.training.heads_fit import train_heads, train_teacher
from crossbit.encoders.training.options import TrainConfig, TrainResult

log = logging.getLogger(__name__)

FORMATS = ("csv", "coco", "karpathy", "multilabel")


def load_pairs(fmt: str, path: str, images: str, split: str | None = None,
               skip_bad: bool = False) -> Pairs:
    """Load a dataset in one of :data:`FORMATS`.

    Args:
        split: for csv a file of image names; for karpathy the split name (train/val/test).
    """
    if fmt == "csv":
        return load_captions_csv(path, images, split, skip_bad)
    if fmt == "coco":
        return load_coco_captions(path, images, skip_bad)
    if fmt == "karpathy":
        return load_karpathy(path, images, split or "test", skip_bad)
    if fmt == "multilabel":
        return load_multilabel_csv(path, images, skip_bad)
    raise ValueError(f"unknown dataset format {fmt!r}; choose one of {FORMATS}")


def held_out_images(n_images: int, n_held_out: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n_held_out`` images chosen at random (sorted) for validation."""
    if not 0 < n_held_out < n_images:
        raise ValueError(f"cannot hold out {n_held_out} of {n_images} images")
    return np.sort(np.random.default_rng(seed).choice(n_images, n_held_out, replace=False))


def without_images(replay: Pairs, images: list[str], say=log.info) -> Pairs | None:
    """``replay`` less the images of ``images`` (by resolved path): replaying a held-out image
    would train on what judges the result. None when nothing is left."""
    mine = {str(Path(p).resolve()) for p in images}
    keep = [i for i, p in enumerate(replay.images) if str(Path(p).resolve()) not in mine]
    if len(keep) == len(replay.images):
        return replay
    say(f"replay: {len(replay.images) - len(keep)} of its images are in the catalog too and are "
        "left out of it (the held-out ones judge the result)")
    return _subset(replay, keep) if keep else None


def _subset(pairs: Pairs, image_ids: list[int]) -> Pairs:
    remap = {old: new for new, old in enumerate(image_ids)}
    keep = [j for j, i in enumerate(pairs.caption_image) if int(i) in remap]
    labels = pairs.labels[image_ids] if pairs.labels is not None else None
    return Pairs([pairs.images[i] for i in image_ids], [pairs.captions[j] for j in keep],
                 np.array([remap[int(pairs.caption_image[j])] for j in keep]), labels,
                 pairs.label_names)


def subset_features(features: FeatureSet, image_ids: np.ndarray) -> FeatureSet:
    """The features of some images and their captions (caption order kept)."""
    image_ids = np.asarray(image_ids)
    remap = np.full(len(features.images), -1)
    remap[image_ids] = np.arange(len(image_ids))
    keep = remap[features.caption_image] >= 0
    return FeatureSet(
        images=features.images[image_ids], texts=features.texts[keep],
        caption_image=remap[features.caption_image[keep]],
        image_views=None if features.image_views is None
        else features.image_views[:, image_ids],
        labels=None if features.labels is None else features.labels[image_ids])


def feature_set(model: HashModel, pairs: Pairs, cache: str | None, flip: bool,
                progress: bool = True, crop_views: int = 0) -> FeatureSet:
    """Cached backbone features of a dataset, with augmented views when asked.

    The views (``image_views``) are the flipped images if ``flip``, then ``crop_views``
    random crops of each image.
    """
    views = [image_features(model, pairs.images, cache, flip=True, progress=progress)] \
        if flip else []
    views += [image_features(model, pairs.images, cache, progress=progress, crop=k)
              for k in range(crop_views)]
    return FeatureSet(
        images=image_features(model, pairs.images, cache, progress=progress),
        texts=text_features(model, pairs.captions, cache, progress=progress),
        caption_image=pairs.caption_image,
        image_views=np.stack(views) if views else None,
        labels=pairs.labels,
    )


def head_inputs(model: HashModel, features: FeatureSet, pseudo_captions: bool) -> FeatureSet:
    """Backbone features -> what the heads take (class semantics appended to images).

    With ``pseudo_captions``, each image's class-semantics vector (a point in the text
    model's space) joins its captions as one more caption, teaching the heads ImageNet's
    vocabulary.
    """
    import torch

    def convert(x):
        if x is None:
            return None
        with torch.no_grad():
            return model.image_inputs(x).cpu().numpy()

    images = convert(features.images)
    texts, caption_image = features.texts, features.caption_image
    if pseudo_captions and model.semantics is not None:
        semantic = images[:, model.config.image_feature_dim:]
        texts = np.concatenate([texts, semantic])
        caption_image = np.concatenate([caption_image, np.arange(len(images))])
    views = None if features.image_views is None \
        else np.stack([convert(v) for v in features.image_views])
    return FeatureSet(images, texts, caption_image, views, features.labels)


def train_seeds(model: HashModel, train: FeatureSet, val: FeatureSet | None, cfg: TrainConfig,
                progress: bool = True, warm: bool = False) -> TrainResult:
    """Train the heads with ``cfg.seeds`` seeds and keep the best on the held-out images.

    Dev or test data never takes part: the choice uses the same held-out training images
    as early stopping. With ``warm`` every seed starts from the model's present heads (see
    :func:`~crossbit.encoders.training.heads_fit.train_heads`). Returns the kept seed's
    result, with every seed's held-out R@sum in ``seed_scores``.
    """
    if cfg.seeds > 1 and val is None:
        raise ValueError("choosing among seeds needs held-out images (val_images > 0)")
    teacher, teacher_rsum = None, None
    if cfg.uses_teacher:
        log.info("training the float teacher (%d dimensions) to distill from", cfg.teacher_dim)
        teacher, teacher_rsum = train_teacher(model, train, val, cfg, progress)
        if teacher_rsum is not None:
            log.info("teacher: held-out R@sum %.1f (cosine)", teacher_rsum)
    best = None
    scores = []
    start = [copy.deepcopy(h.state_dict()) for h in (model.image_head, model.text_head)] \
        if warm else None
    for k in range(cfg.seeds):
        run = replace(cfg, seed=cfg.seed + k, seeds=1)
        if start is not None:
            model.image_head.load_state_dict(start[0])
            model.text_head.load_state_dict(start[1])
        result = train_heads(model, train, val, run, progress=progress, teacher=teacher,
                             warm=warm)
        score = recall_sum(result.report) if val is not None else 0.0
        scores.append({"seed": run.seed, "heldout_rsum": score})
        if cfg.seeds > 1:
            log.info("seed %d: held-out R@sum %.1f", run.seed, score)
        if best is None or score > best[0]:
            state = [copy.deepcopy(h.state_dict()) for h in (model.image_head, model.text_head)]
            best = (score, result, state)
    _, result, state = best
    model.image_head.load_state_dict(state[0])
    model.text_head.load_state_dict(state[1])
    result.seed_scores, result.teacher_heldout_rsum = scores, teacher_rsum
    return result


@dataclass
class Outcome:
    """A heads training run judged against the model it must beat."""

    model: HashModel  # what to write: the trained model, or the reference when that is better
    result: TrainResult  # the report is the written model's, on the held-out images
    verdict: Verdict | None  # None when there is no reference or nothing was held out
    written: str  # "trained" or "reference"
    reference: str | None  # the reference's name (a folder or shipped name)


def fit_and_judge(model: HashModel, warm: bool, features: FeatureSet, held: np.ndarray,
                  cfg: TrainConfig, reference: HashModel | None = None,
                  reference_name: str | None = None, replay: FeatureSet | None = None,
                  replay_share: float = 0.5, keep_trained: bool = False,
                  progress: bool = True) -> Outcome:
    """Train the heads on ``features`` less the ``held`` images, then keep the better model.

    Args:
        model: the model to train (its heads are the start when ``warm``).
        features: backbone features of the user's images and captions.
        held: indices of the images held out for early stopping and the comparison.
        reference: the model the trained one must beat on the held-out images (see
            :func:`~crossbit.encoders.training.catalog.compare`); unless ``keep_trained``,
            it is what the outcome writes when the trained model does not clearly beat it.
        replay: features of the starting model's own training data, mixed in at
            ``replay_share`` of the training images.

    Returns:
        the :class:`Outcome`.
    """
    rest = np.setdiff1d(np.arange(len(features.images)), held)
    train_raw = subset_features(features, rest)
    if replay is not None:
        train_raw = with_replay(train_raw, replay, replay_share, cfg.seed)
    held_raw = subset_features(features, held) if len(held) else None
    val = head_inputs(model, held_raw, False) if held_raw is not None else None
    result = train_seeds(model, head_inputs(model, train_raw, cfg.pseudo_captions), val, cfg,
                         progress, warm=warm)
    if reference is None or held_raw is None:
        return Outcome(model, result, None, "trained", reference_name)
    verdict = compare(model, reference, held_raw, seed=cfg.seed)
    if verdict.keep_trained or keep_trained:
        return Outcome(model, result, verdict, "trained", reference_name)
    kept = TrainResult(held_out_report(reference, held_raw), result.history, result.seed,
                       result.seed_scores, result.teacher_heldout_rsum)
    return Outcome(reference, kept, verdict, "reference", reference_name)


def train_model(model_config: ModelConfig, train_config: TrainConfig, pairs: Pairs,
                val_images: int, out: str | os.PathLike, cache: str | None = None,
                device: str | None = None, progress: bool = True, init: str = "auto",
                keep_trained: bool = False, replay: Pairs | None = None,
                replay_share: float = 0.5, say=log.info) -> dict:
    """Train a model (heads on cached features, or end to end) and save it to ``out``.

    ``val_images`` images of ``pairs`` (chosen with the training seed) are held out
    for early stopping and the final comparison; 0 trains on everything for a fixed number
    of epochs. ``init`` says where the heads start (see
    :func:`~crossbit.encoders.training.catalog.choose_start`: "auto", "none", a model
    folder or shipped name; a starting model's config replaces ``model_config``). The
    trained heads are scored against the starting model (or, from fresh heads, the shipped
    model when it is of the same kind) on the held-out images, and the better is written
    unless ``keep_trained``. With ``train_config.tune_text`` the text encoder is then tuned
    with the heads (see :func:`~crossbit.encoders.training.text_tuning.tune_text`); with an
    ``init`` other than "auto" that tuning starts from its heads without training them first.

    Args:
        replay: the starting model's own training data (image-caption pairs), mixed into
            the training images at ``replay_share``.
        say: where the choices made are reported (``print`` from the command line).

    Returns:
        the held-out report of the written weights, with ``start``, ``written`` and
        ``verdict`` (the comparison) when there was one.
    """
    if train_config.finetune and init not in ("auto", "none"):
        raise ValueError("--init starts heads training or --tune-text, not --finetune")
    start = choose_start("none" if train_config.finetune else init, model_config,
                         len(pairs.images), device)
    say(f"heads start from {start.reason}")
    if not val_images and not train_config.finetune:  # never a silent loss: no unchecked model
        against = comparable(start, model_config)
        if against is not None and not keep_trained:
            raise ValueError(
                f"nothing is held out ({len(pairs.images)} images; under {4 * MIN_HELD_OUT} none "
                f"are, or --val-images 0), so the trained model cannot be checked against "
                f"{against}: give --val-images {MIN_HELD_OUT} or more to check it, or "
                "--keep-trained to write it unchecked")
        if against is not None:
            log.warning("the trained model is written unchecked (--keep-trained): nothing was "
                        "held out to compare it with %s", against)
    model = start.model if start.model is not None else new_model(model_config, device)
    model_config = model.config
    held = held_out_images(len(pairs.images), val_images, train_config.seed) if val_images \
        else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(pairs.images)), held)
    data = {"images": len(pairs.images), "captions": len(pairs.captions),
            "train_images": len(rest), "val_images": len(held)}
    if train_config.finetune:
        train, val = (_subset(pairs, rest.tolist()), _subset(pairs, held.tolist())) \
            if val_images else (pairs, None)
        result = finetune(model, train, val, train_config, progress=progress)
        save_checkpoint(model, train_config, result, out, data, with_backbones=True)
        return result.report
    use_image_runtime(model)
    features = feature_set(model, pairs, cache, train_config.flip, progress,
                           train_config.crop_views)
    notes = {"start": start.source or "fresh heads"}
    if train_config.tune_text:
        heads_given = init not in ("auto", "none")
        if not heads_given and val_images:  # the heads first, judged like heads alone
            reference, name = reference_model(start, model_config, device)
            outcome = fit_and_judge(model, start.model is not None, features, held, train_config,
                                    reference, name, None, replay_share, keep_trained, progress)
            model, heads_given = outcome.model, True
            if outcome.verdict is not None:
                notes["heads_verdict"] = {"reference": name, **outcome.verdict.summary()}
                line, warning = verdict_line(outcome.verdict, name, outcome.written,
                                             "the text tuning")
                (log.warning if warning else say)(line)
        result = _tune(model, start.model is not None, heads_given, features, held, pairs,
                       train_config, progress)
        written = "trained"
    else:
        if replay is not None:  # the catalog's own images (held-out ones too) are not replayed
            replay = without_images(replay, pairs.images, say)
        replayed = None if replay is None else feature_set(
            model, replay, cache, train_config.flip, progress, train_config.crop_views)
        reference, name = reference_model(start, model_config, device) if val_images \
            else (None, None)
        outcome = fit_and_judge(model, start.model is not None, features, held, train_config,
                                reference, name, replayed, replay_share, keep_trained, progress)
        model, result, written = outcome.model, outcome.result, outcome.written
        if outcome.verdict is not None:
            notes["verdict"] = {"reference": name, **outcome.verdict.summary()}
            line, warning = verdict_line(outcome.verdict, name, written, str(out))
            (log.warning if warning else say)(line)
        elif val_images:
            say("no comparison: no shipped model has this architecture")
    notes["written"] = written
    if val_images and written == "trained":
        result.report["shipped_model"] = shipped_model_on(subset_features(features, held),
                                                          model_config)
    # a model whose text model (or backbone) is a folder of its own is written whole, so that
    # the result does not point back at the --init folder
    own_text = model.config.text_model not in text_model_names()
    own_backbone = str(model.config.image_weights or "").endswith(".safetensors")
    save_checkpoint(model, train_config, result, out, data,
                    with_text_model=train_config.tune_text or own_text,
                    with_backbones=own_backbone, notes=notes)
    log.info("saved model to %s", Path(out))
    return {**result.report, **notes}


def _tune(model: HashModel, warm: bool, heads_given: bool, features: FeatureSet,
          held: np.ndarray, pairs: Pairs, cfg: TrainConfig, progress: bool) -> TrainResult:
    """--tune-text: the heads first (unless an --init model gave them), then the text encoder."""
    from crossbit.encoders.training.text_tuning import tune_text

    rest = np.setdiff1d(np.arange(len(pairs.images)), held)
    val = head_inputs(model, subset_features(features, held), False) if len(held) else None
    if not heads_given:
        train_seeds(model, head_inputs(model, subset_features(features, rest),
                                       cfg.pseudo_captions), val, cfg, progress, warm=warm)
    return tune_text(model, head_inputs(model, subset_features(features, rest), False),
                     captions_of(pairs, rest), val, captions_of(pairs, held), cfg, progress)


def captions_of(pairs: Pairs, image_ids: np.ndarray) -> list[str]:
    """The captions of some images, in the order :func:`subset_features` keeps their rows."""
    keep = np.isin(pairs.caption_image, image_ids)
    return [pairs.captions[j] for j in np.flatnonzero(keep)]


def new_model(model_config: ModelConfig, device: str | None = None) -> HashModel:
    """An untrained model: feature sizes from its backbones, class semantics where the image
    backbone has an ImageNet classifier."""
    from crossbit.encoders.backbones import get_spec
    from crossbit.encoders.semantics import ClassSemantics, classifier_weights
    from crossbit.encoders.text_models import TextEncoder

    model_config.image_feature_dim = get_spec(model_config.image_backbone).feature_dim
    text = TextEncoder(model_config.text_model)
    model_config.text_feature_dim = text.feature_dim
    if model_config.semantics:
        try:
            classifier_weights(model_config.image_backbone, model_config.image_weights)
        except (ValueError, KeyError) as exc:
            log.warning("class semantics off: %s", exc)
            model_config.semantics = False
    model = HashModel(model_config, device=device)
    model.text_encoder = text.to(model.device)
    if model.semantics is not None:
        model.semantics = ClassSemantics.build(model_config.image_backbone,
                                               model_config.image_weights,
                                               model.text_encoder).to(model.device)
    return model


def held_out_report(model: HashModel, raw: FeatureSet) -> dict:
    """A model's report (no curves) on backbone features of held-out images and captions."""
    from crossbit.encoders.training.evaluate import evaluate_encoded

    for head in (model.image_head, model.text_head):
        head.eval()
    images = model.encode_image_features(raw.images)
    texts = model.encode_text_features(raw.texts)
    return evaluate_encoded(images, texts, raw.caption_image, model.bits, raw.labels,
                            curves=False)


def shipped_model_on(val_raw: FeatureSet, model_config: ModelConfig) -> dict | None:
    """The shipped model's held-out report on the same images and texts (None when the new
    model's backbones differ, so the same features would not fit it)."""
    shipped = HashModel.load()
    if (shipped.config.image_backbone, Path(shipped.config.text_model).name) != \
            (model_config.image_backbone, Path(model_config.text_model).name):
        return None
    return held_out_report(shipped, val_raw)
