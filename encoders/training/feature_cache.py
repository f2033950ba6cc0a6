"""Backbone features for whole datasets, computed once with progress bars and cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from crossbit.encoders.backbones import random_crop
from crossbit.encoders.model import HashModel, load_image
from crossbit.encoders.text_models import text_model_id

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Cached backbone features of a dataset."""

    images: np.ndarray  # (n_images, d_img)
    texts: np.ndarray  # (n_captions, d_txt)
    caption_image: np.ndarray  # (n_captions,)
    image_views: np.ndarray | None = None  # (n_views, n_images, d_img): flipped, crops
    labels: np.ndarray | None = None


def _key(kind: str, model_id: str, items: list[str], extra: str = "") -> str:
    h = hashlib.sha1(json.dumps([kind, model_id, extra, items]).encode())
    return f"{kind}-{h.hexdigest()[:16]}"


def _cached(cache: Path | None, key: str, compute) -> np.ndarray:
    if cache is None:
        return compute()
    path = Path(cache) / f"{key}.npy"
    if path.exists():
        log.info("features from cache %s", path)
        return np.load(path)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, value)
    os.replace(tmp, path)
    return value


def image_features(model: HashModel, paths: list[str], cache: str | os.PathLike | None = None,
                   flip: bool = False, batch_size: int = 32, progress: bool = True,
                   crop: int | None = None) -> np.ndarray:
    """(n, image_feature_dim) float32 backbone features of image files.

    Args:
        flip: of the horizontally flipped images.
        crop: of random crop view number ``crop`` (see :func:`random_crop`): the crop of
            image i is drawn from a generator seeded with (crop, i), so a view is the same
            on every run.
    """
    c = model.config
    model_id = f"{c.image_backbone}:{c.image_weights}"
    what = f" (crop view {crop})" if crop is not None else " (flipped)" if flip else ""

    def compute() -> np.ndarray:
        out = []
        bar = tqdm(total=len(paths), desc=f"image features{what}", unit="img",
                   disable=not progress)
        for start in range(0, len(paths), batch_size):
            batch = [load_image(p) for p in paths[start : start + batch_size]]
            if crop is not None:
                batch = [random_crop(im, np.random.default_rng([crop, start + k]))
                         for k, im in enumerate(batch)]
            # the torch backbone batches here (training features; ONNX's rows never mix)
            out.append(model.image_features(batch, flip=flip, alone=False).cpu().numpy())
            bar.update(len(batch))
        bar.close()
        return np.concatenate(out).astype(np.float32)

    extra = f"flip={flip}" + (f",crop={crop}" if crop is not None else "")
    return _cached(cache, _key("img", model_id, paths, extra), compute)


def text_features(model: HashModel, texts: list[str], cache: str | os.PathLike | None = None,
                  batch_size: int = 128, progress: bool = True) -> np.ndarray:
    """(n, text_feature_dim) float32 mean-pooled text features; batches sorted by length
    (the torch runtime pads each to its longest: training features; the ONNX runtime's
    features are the service's, whatever the batch)."""

    def compute() -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), model.config.text_feature_dim), np.float32)
        bar = tqdm(total=len(texts), desc="text features", unit="txt", disable=not progress)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            with torch.no_grad():
                out[idx] = model.text_features([texts[i] for i in idx], alone=False).cpu().numpy()
            bar.update(len(idx))
        bar.close()
        return out

    # fp32 ONNX gives the torch features (to 1e-6); only int8 needs its own cache entry,
    # named for its scheme: per-token activation scales (entries of the per-tensor one,
    # tagged "int8", are not reused)
    tag = "int8-per-token" if getattr(model.text_runtime, "precision", "fp32") == "int8" else ""
    return _cached(cache, _key("txt", text_model_id(model.config.text_model) + tag, texts), compute)
