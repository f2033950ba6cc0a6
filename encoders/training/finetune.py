"""End-to-end fine-tuning: both backbones and the heads on images and captions (the GPU way)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from tqdm import tqdm

from crossbit.encoders.backbones import get_spec, preprocess, random_crop
from crossbit.encoders.model import HashModel, load_image
from crossbit.encoders.training.datasets import Pairs
from crossbit.encoders.training.evaluate import evaluate_encoded
from crossbit.encoders.training.heads_fit import compute_loss, epoch_batches
from crossbit.encoders.training.options import TrainConfig, TrainResult, seed_everything


def finetune(model: HashModel, train: Pairs, dev: Pairs | None, cfg: TrainConfig,
             max_steps: int | None = None, progress: bool = True) -> TrainResult:
    """Train backbones and heads end to end on images and captions (use a GPU for real runs).

    Input statistics of the heads are fixed from the first batch's features. The result's
    report is the final dev report, or the last losses without a dev set.

    Raises:
        ValueError: when the data gives no batch (fewer images than ``cfg.batch_size``).
    """
    if len(train.images) < cfg.batch_size:
        raise ValueError(f"fine-tuning needs at least one batch: {len(train.images)} images, "
                         f"batch size {cfg.batch_size}")
    seed_everything(cfg.seed)
    device = model.device
    backbone, text = model.backbone, model.text_encoder
    rng = np.random.default_rng(cfg.seed)
    heads = [model.image_head, model.text_head]
    head_params = [p for h in heads for p in h.parameters()]
    optim = torch.optim.Adam([
        {"params": head_params, "lr": cfg.lr},
        {"params": list(backbone.parameters()) + list(text.parameters()),
         "lr": cfg.lr * cfg.backbone_lr_scale},
    ], weight_decay=cfg.weight_decay)
    step, stats_set, parts = 0, False, {}
    spec = get_spec(model.config.image_backbone)
    one_caption = replace(cfg, all_captions=False)  # one random caption per image per batch
    for epoch in range(cfg.epochs):
        bar = tqdm(epoch_batches(rng, train.caption_image, one_caption),
                   total=cfg.rounds * (len(train.images) // cfg.batch_size),
                   desc=f"finetune epoch {epoch + 1}", disable=not progress)
        for image_rows, caption_rows, _ in bar:
            images = [load_image(train.images[i]) for i in image_rows]
            if cfg.crop_views:  # fresh random crops each step (the cached views' recipe)
                images = [random_crop(im, rng) for im in images]
            pixels = preprocess(images, spec, flip=cfg.flip and rng.random() < 0.5).to(device)
            captions = [train.captions[j] for j in caption_rows]
            backbone.train()
            text.train()
            img_f = model.image_inputs(backbone(pixels))
            txt_f = text(captions)
            if not stats_set:
                model.image_head.set_input_stats(img_f.detach())  # (pooled + semantics)
                model.text_head.set_input_stats(txt_f.detach())
                stats_set = True
            for h in heads:
                h.train()
            img, img_emb = model.image_head(img_f)
            txt, txt_emb = model.text_head(txt_f)
            loss, parts = compute_loss(cfg, img, txt, img_emb, txt_emb)
            optim.zero_grad()
            loss.backward()
            optim.step()
            step += 1
            bar.set_postfix(loss=float(loss))
            if max_steps is not None and step >= max_steps:
                break
        if max_steps is not None and step >= max_steps:
            break
    backbone.eval()
    text.eval()
    for h in heads:
        h.eval()
    history = [{"steps": step, **parts}]
    if dev is None:
        return TrainResult(history[-1], history, cfg.seed)
    images = model.encode_images(dev.images)
    texts = model.encode_texts(dev.captions)
    report = evaluate_encoded(images, texts, dev.caption_image, model.bits, dev.labels,
                              curves=False)
    return TrainResult(report, history, cfg.seed)
