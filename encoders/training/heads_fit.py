"""Hash heads trained on cached frozen-backbone features: the objective, the batches, the fit."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from crossbit.encoders.heads import HashHead, sign_ste
from crossbit.encoders.model import Encoded, HashModel, head_outputs
from crossbit.encoders.training.evaluate import evaluate_encoded, recall_sum
from crossbit.encoders.training.feature_cache import FeatureSet
from crossbit.encoders.training.losses import (
    bit_balance_loss,
    dcmh_nll,
    multi_info_nce,
    quantization_loss,
    similarity_distillation,
    triplet_max_violation,
)
from crossbit.encoders.training.options import TrainConfig, TrainResult, seed_everything

log = logging.getLogger(__name__)


class Teacher(NamedTuple):
    """A float teacher's outputs on the training features (constants while the codes learn)."""

    images: torch.Tensor
    image_views: torch.Tensor | None  # (n_views, n_images, dim), as FeatureSet.image_views
    texts: torch.Tensor


def compute_loss(cfg: TrainConfig, img: torch.Tensor, txt: torch.Tensor,
                 img_emb: torch.Tensor | None, txt_emb: torch.Tensor | None,
                 similarity: torch.Tensor | None = None, owner: torch.Tensor | None = None,
                 teacher: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
    """The training objective on one batch of head outputs.

    Args:
        owner: the batch image of each text (None: row i of ``img`` and ``txt`` match).
        teacher: the teacher's (image, text) outputs for the same rows, to distill from.
    """
    parts = {}
    if owner is None:
        owner = torch.arange(len(img), device=img.device)
    if cfg.objective == "dcmh":
        if similarity is None:
            raise ValueError("the dcmh objective needs labels (a multi-label dataset)")
        parts["rank"] = dcmh_nll(img, txt, similarity)
    else:
        def rank(a, b):
            if cfg.objective == "triplet":
                return triplet_max_violation(a, b, cfg.margin)
            return multi_info_nce(a, b, owner, cfg.temperature)

        parts["rank"] = rank(img, txt)
        if cfg.sign_weight:
            parts["sign"] = cfg.sign_weight * rank(sign_ste(img), sign_ste(txt))
        if img_emb is not None:
            parts["embed"] = rank(img_emb, txt_emb)
        if teacher is not None:
            def distill(a, b):
                return similarity_distillation(a, b, *teacher, cfg.temperature,
                                               cfg.teacher_temperature)

            parts["distill"] = cfg.distill * (distill(img, txt)
                                              + distill(sign_ste(img), sign_ste(txt)))
    parts["quant"] = cfg.quant_weight * (quantization_loss(img) + quantization_loss(txt))
    parts["balance"] = cfg.balance_weight * (bit_balance_loss(img) + bit_balance_loss(txt))
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _captions_by_image(caption_image: np.ndarray) -> dict[int, list[int]]:
    by_image: dict[int, list[int]] = {}
    for j, i in enumerate(caption_image):
        by_image.setdefault(int(i), []).append(j)
    return by_image


def epoch_batches(rng: np.random.Generator, caption_image: np.ndarray, cfg: TrainConfig):
    """An epoch's batches of (image rows, caption rows, each caption's position in the batch).

    ``cfg.rounds`` passes over the images in random order; with ``cfg.multi_caption``
    every caption of each batch image comes along, else one chosen at random.
    """
    by_image = _captions_by_image(caption_image)
    for _ in range(cfg.rounds):
        images = rng.permutation(sorted(by_image))
        for start in range(0, len(images) - cfg.batch_size + 1, cfg.batch_size):
            batch = images[start : start + cfg.batch_size]
            if cfg.multi_caption:
                texts = [j for i in batch for j in by_image[i]]
                owner = [n for n, i in enumerate(batch) for _ in by_image[i]]
            else:
                texts = [by_image[i][rng.integers(len(by_image[i]))] for i in batch]
                owner = list(range(len(batch)))
            yield batch, np.array(texts), np.array(owner)


def _encode_with(image_head: HashHead, text_head: HashHead, data: FeatureSet,
                 device: torch.device) -> tuple[Encoded, Encoded]:
    """Codes from head inputs (class semantics already appended to the images)."""
    return (head_outputs(image_head, torch.as_tensor(data.images, device=device)),
            head_outputs(text_head, torch.as_tensor(data.texts, device=device)))


def train_heads(model: HashModel, train: FeatureSet, dev: FeatureSet | None, cfg: TrainConfig,
                progress: bool = True, teacher: Teacher | None = None,
                warm: bool = False) -> TrainResult:
    """Train the two hash heads on cached features, early-stopping on dev recall.

    The model ends with the best dev weights. The result's report is the best dev report
    (or the last epoch's losses when there is no dev set).

    Args:
        teacher: a float teacher's outputs on ``train`` (see :func:`train_teacher`), used
            when ``cfg.uses_teacher``.
        warm: start from the heads' present weights and input statistics (a trained
            model's) instead of fresh ones; the starting weights are scored as epoch 0, so
            with a dev set the result never scores below them there.
    """
    report, history = _fit_heads(model.image_head, model.text_head, model.device, train, dev,
                                 cfg, progress, teacher if cfg.uses_teacher else None, warm=warm)
    return TrainResult(report, history, cfg.seed)


def train_teacher(model: HashModel, train: FeatureSet, dev: FeatureSet | None, cfg: TrainConfig,
                  progress: bool = True) -> tuple[Teacher, float | None]:
    """Train wide float heads (``cfg.teacher_dim``, ranking loss only) to distill from.

    Early stopping looks at the cosine recall of the float outputs. Returns (the
    teacher's outputs on every training feature, its held-out R@sum or None).
    """
    c = model.config
    heads = [HashHead(dim, cfg.teacher_dim, c.hidden, c.dropout).to(model.device)
             for dim in (model.image_head.mean.numel(), model.text_head.mean.numel())]
    teacher_cfg = replace(cfg, sign_weight=0.0, quant_weight=0.0, balance_weight=0.0,
                          distill=0.0)
    report, _ = _fit_heads(*heads, model.device, train, dev, teacher_cfg, progress, None,
                        score_floats=True)
    device = model.device

    def out(head, x):
        if x is None:
            return None
        with torch.no_grad():
            return head(torch.as_tensor(x, device=device))[0]

    views = None if train.image_views is None else torch.stack(
        [out(heads[0], v) for v in train.image_views])
    outputs = Teacher(out(heads[0], train.images), views, out(heads[1], train.texts))
    return outputs, (recall_sum(report["float"]) if dev is not None else None)


def views_then_image(images, views, augment: bool, device: torch.device) -> torch.Tensor:
    """(n_views + 1, n, d): the augmented views first, the image itself last (only the image
    without ``augment`` or views); each training step draws one of them per image."""
    stacked = torch.as_tensor(images, device=device)[None]
    if augment and views is not None:
        stacked = torch.cat([torch.as_tensor(views, device=device), stacked])
    return stacked


def _held_out_entry(heads, dev: FeatureSet, device: torch.device,
                    score_floats: bool) -> tuple[float, dict, dict]:
    """(the selection score, the report, the history fields) of the heads on held-out data."""
    for h in heads:
        h.eval()
    img_codes, txt_codes = _encode_with(*heads, dev, device)
    report = evaluate_encoded(img_codes, txt_codes, dev.caption_image,
                              8 * img_codes.codes.shape[1], dev.labels, curves=False)
    entry = {"dev_rsum": recall_sum(report), "dev_float_rsum": recall_sum(report["float"])}
    return entry["dev_float_rsum" if score_floats else "dev_rsum"], report, entry


def _fit_heads(image_head: HashHead, text_head: HashHead, device: torch.device,
               train: FeatureSet, dev: FeatureSet | None, cfg: TrainConfig, progress: bool,
               teacher: Teacher | None, score_floats: bool = False,
               warm: bool = False) -> tuple[dict, list[dict]]:
    """The shared loop of heads and teacher: (the best held-out report, one entry per epoch)."""
    seed_everything(cfg.seed)
    heads = [image_head, text_head]
    if not warm:
        for head in heads:
            head.reset_parameters()
        image_head.set_input_stats(torch.as_tensor(train.images, device=device))
        text_head.set_input_stats(torch.as_tensor(train.texts, device=device))
    params = [p for h in heads for p in h.parameters()]
    optim = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, cfg.rounds * len(np.unique(train.caption_image)) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, cfg.epochs * steps_per_epoch)
    rng = np.random.default_rng(cfg.seed)
    augment = bool(cfg.flip or cfg.crop_views)
    img_all = views_then_image(train.images, train.image_views, augment, device)
    t_img_all = None if teacher is None else \
        views_then_image(teacher.images, teacher.image_views, augment, device)
    txt_all = torch.as_tensor(train.texts, device=device)
    labels = torch.as_tensor(train.labels, dtype=torch.float32, device=device) \
        if train.labels is not None else None
    best, best_state, best_report, stale = -1.0, None, {}, 0
    history: list[dict] = []
    if warm and dev is not None:  # the starting weights are a candidate too: epoch 0
        best, best_report, entry = _held_out_entry(heads, dev, device, score_floats)
        best_state = [copy.deepcopy(h.state_dict()) for h in heads]
        history.append({"epoch": 0, **entry})
        log.info("held-out R@sum %.1f before training (the starting weights)", best)
    bar = tqdm(range(cfg.epochs), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        for h in heads:
            h.train()
        totals: dict[str, float] = {}
        steps = 0
        for images, texts, owner in epoch_batches(rng, train.caption_image, cfg):
            bi = torch.as_tensor(images, device=device)
            tj = torch.as_tensor(texts, device=device)
            view = torch.zeros(len(bi), dtype=torch.long, device=device)
            if len(img_all) > 1:
                view = torch.as_tensor((rng.random(len(bi)) * len(img_all)).astype(np.int64),
                                       device=device)
            img_in = img_all[view, bi]
            img, img_emb = image_head(img_in)
            txt, txt_emb = text_head(txt_all[tj])
            sim = None
            if labels is not None:
                sim = ((labels[bi] @ labels[bi].t()) > 0).float()
            taught = None
            if teacher is not None:
                t_img = t_img_all[view, bi] if len(t_img_all) == len(img_all) \
                    else t_img_all[-1, bi]
                taught = (t_img, teacher.texts[tj])
            loss, parts = compute_loss(cfg, img, txt, img_emb, txt_emb, sim,
                                       torch.as_tensor(owner, device=device), taught)
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            steps += 1
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
        for h in heads:
            h.eval()
        entry = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in totals.items()}}
        if dev is not None:
            score, report, scores = _held_out_entry(heads, dev, device, score_floats)
            entry.update(scores)
            if score > best:
                best, best_report, stale = score, report, 0
                best_state = [copy.deepcopy(h.state_dict()) for h in heads]
            else:
                stale += 1
        history.append(entry)
        log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(v, 4) for k, v in entry.items()}))
        bar.set_postfix({k: round(v, 3) for k, v in entry.items() if k != "epoch"})
        if dev is not None and stale >= cfg.patience:
            log.info("early stop after epoch %d (best dev R@sum %.1f)", epoch + 1, best)
            break
    if best_state is not None:
        for h, state in zip(heads, best_state):
            h.load_state_dict(state)
    return best_report or history[-1], history


