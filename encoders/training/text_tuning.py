"""Tuning the text tower against the locked image tower (LiT): the text encoder and both heads
train together, the images enter as cached backbone features."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace

import numpy as np
import torch
from tqdm import tqdm

from crossbit.encoders.model import HashModel, head_outputs
from crossbit.encoders.training.evaluate import evaluate_encoded, recall_sum
from crossbit.encoders.training.feature_cache import FeatureSet, text_features
from crossbit.encoders.training.heads_fit import compute_loss, epoch_batches, views_then_image
from crossbit.encoders.training.options import TrainConfig, TrainResult, seed_everything

log = logging.getLogger(__name__)


def tunable_parameters(text_encoder) -> list[torch.nn.Parameter]:
    """The transformer's parameters except its token embeddings (kept: 12M of MiniLM's 22M
    parameters, rarely seen words would drift, and they cost the most optimizer state)."""
    embeddings = {id(p) for p in text_encoder.model.get_input_embeddings().parameters()}
    params = []
    for p in text_encoder.model.parameters():
        p.requires_grad_(id(p) not in embeddings)
        if p.requires_grad:
            params.append(p)
    return params


def _encode_captions(model: HashModel, captions: list[str]):
    """Codes of the captions with the encoder as it is now (uncached: it keeps changing)."""
    model.text_encoder.eval()
    features = text_features(model, captions, cache=None, batch_size=256, progress=False)
    return head_outputs(model.text_head, torch.as_tensor(features, device=model.device))


def tune_text(model: HashModel, train: FeatureSet, train_captions: list[str],
              val: FeatureSet | None, val_captions: list[str] | None, cfg: TrainConfig,
              progress: bool = True) -> TrainResult:
    """Train the text encoder (at ``cfg.text_lr``) and both heads (at ``cfg.tune_lr``).

    ``train.images`` (and its views) are the image heads' inputs from the feature cache;
    the texts are the captions themselves (``train_captions``, one per row of
    ``train.caption_image``), encoded afresh at every step. The heads start from the
    model's weights (trained on frozen features first). Each epoch is scored on the
    held-out images; the best epoch's weights are kept (the starting weights count as
    epoch 0, so tuning never ends worse on the held-out images than it began).
    """
    if len(train_captions) != len(train.caption_image):
        raise ValueError(f"{len(train_captions)} captions for {len(train.caption_image)} rows")
    if len(np.unique(train.caption_image)) < cfg.batch_size:
        raise ValueError(f"tuning needs at least one batch of {cfg.batch_size} images")
    seed_everything(cfg.seed)
    device = model.device
    model.text_runtime = None  # the encoder being tuned, not an exported graph of the old one
    text = model.text_encoder
    heads = [model.image_head, model.text_head]
    optim = torch.optim.Adam([
        {"params": [p for h in heads for p in h.parameters()], "lr": cfg.tune_lr},
        {"params": tunable_parameters(text), "lr": cfg.text_lr},
    ], weight_decay=cfg.weight_decay)
    batches_cfg = replace(cfg, all_captions=False, rounds=cfg.tune_rounds)
    steps = cfg.tune_rounds * (len(np.unique(train.caption_image)) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, max(1, cfg.tune_epochs * steps))
    rng = np.random.default_rng(cfg.seed)
    img_all = views_then_image(train.images, train.image_views, bool(cfg.flip or cfg.crop_views),
                               device)
    val_images = None if val is None else torch.as_tensor(val.images, device=device)

    def score() -> tuple[float, dict]:
        for h in heads:
            h.eval()
        with torch.no_grad():
            images = head_outputs(model.image_head, val_images)
        texts = _encode_captions(model, val_captions)
        report = evaluate_encoded(images, texts, val.caption_image, model.bits, val.labels,
                                  curves=False)
        return recall_sum(report), report

    def snapshot():
        return [copy.deepcopy(m.state_dict()) for m in (*heads, text)]

    history: list[dict] = []
    best, best_report, best_state, stale = -1.0, {}, None, 0
    if val is not None:
        best, best_report = score()
        best_state = snapshot()
        history.append({"epoch": 0, "dev_rsum": best})
        log.info("tune-text: held-out R@sum %.1f before tuning", best)
    for epoch in range(cfg.tune_epochs):
        for m in (*heads, text):
            m.train()
        totals: dict[str, float] = {}
        n = 0
        bar = tqdm(epoch_batches(rng, train.caption_image, batches_cfg), total=steps,
                   desc=f"tune-text epoch {epoch + 1}", disable=not progress)
        for images, rows, _ in bar:
            bi = torch.as_tensor(images, device=device)
            view = torch.as_tensor((rng.random(len(bi)) * len(img_all)).astype(np.int64),
                                   device=device)
            img, img_emb = model.image_head(img_all[view, bi])
            txt, txt_emb = model.text_head(text([train_captions[j] for j in rows]))
            loss, parts = compute_loss(cfg, img, txt, img_emb, txt_emb)
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            n += 1
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
            bar.set_postfix(loss=round(float(loss.detach()), 3))
        entry = {"epoch": epoch + 1, **{k: v / max(n, 1) for k, v in totals.items()}}
        if val is not None:
            entry["dev_rsum"], report = score()
            if entry["dev_rsum"] > best:
                best, best_report, best_state, stale = entry["dev_rsum"], report, snapshot(), 0
            else:
                stale += 1
        history.append(entry)
        log.info("tune-text epoch %d: %s", epoch + 1,
                 json.dumps({k: round(v, 4) for k, v in entry.items()}))
        if val is not None and stale >= cfg.tune_patience:
            log.info("tune-text: early stop after epoch %d (best held-out R@sum %.1f)",
                     epoch + 1, best)
            break
    if best_state is not None:
        for m, state in zip((*heads, text), best_state):
            m.load_state_dict(state)
    for m in (*heads, text):
        m.eval()
    return TrainResult(best_report or history[-1], history, cfg.seed)
