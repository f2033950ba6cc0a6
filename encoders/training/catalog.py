"""Training on a catalog of one's own: where the heads start, defaults from the data size, and
the rule that writes the better of the trained and the starting model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossbit.encoders.config import ModelConfig
from crossbit.encoders.model import HashModel
from crossbit.encoders.training.feature_cache import FeatureSet

log = logging.getLogger(__name__)

SMALL_DATA = 10_000  # up to this many images, heads start from the shipped model by default
# what must agree for a model's heads to be a starting point (or a stand-in) for another's
ARCHITECTURE = ("bits", "image_backbone", "image_weights", "text_model", "hidden", "embed_dim",
                "semantics")
FLAGS = {"bits": "--bits", "image_backbone": "--backbone", "image_weights": "--backbone-weights",
         "text_model": "--text-model", "hidden": "--hidden", "embed_dim": "--embed-dim",
         "semantics": "class semantics"}


MIN_HELD_OUT = 20  # fewer held-out images cannot tell a better model from a lucky one
FEATURES = ("image_backbone", "image_weights", "text_model")  # what two models must share to
# be scored on the same held-out features


def auto_held_out(n_images: int) -> int:
    """Images held out for early stopping and the final comparison, from the data size.

    None below 80 images (the comparison needs MIN_HELD_OUT, and they would be a quarter of
    the data); a quarter up to 50 images (so that a few lucky queries do not decide); a tenth
    from 500 images on, at most 500.
    """
    if n_images < 4 * MIN_HELD_OUT:
        return 0
    return min(500, max(min(50, n_images // 4), n_images // 10))


def auto_batch_size(n_fit: int) -> int:
    """Images per step: 128, or fewer when that would leave under about 4 steps per epoch."""
    return 32 if n_fit < 256 else 64 if n_fit < 640 else 128


@dataclass
class Plan:
    """The schedule of one training run, and which of its values were chosen automatically."""

    val_images: int
    batch_size: int
    epochs: int
    lr: float
    patience: int
    chosen: tuple[str, ...] = ()

    def describe(self, n_images: int) -> str:
        """One line for the user: the values and where they came from."""
        held = (f"{self.val_images} images held out for early stopping and the final "
                "comparison" if self.val_images else
                "nothing held out: fixed epochs, no comparison")
        auto = ", ".join(f"--{name.replace('_', '-')}" for name in self.chosen)
        return (f"{held}; batches of {self.batch_size}, learning rate {self.lr:g}, up to "
                f"{self.epochs} epochs, stopping after {self.patience} without a better held-out "
                f"score" + (f" ({auto} chosen for {n_images} images)" if auto else ""))


def plan_for(n_images: int, val_images: int | None = None, batch_size: int | None = None,
             epochs: int | None = None, lr: float | None = None,
             patience: int | None = None) -> Plan:
    """The defaults for ``n_images`` images; any value given is kept as given.

    Args:
        n_images: images in the user's data (before holding any out).

    Returns:
        the plan, with the names of the values it chose in ``chosen``.
    """
    chosen = []
    if val_images is None:
        val_images = auto_held_out(n_images)
        chosen.append("val_images")
    if batch_size is None:
        batch_size = auto_batch_size(n_images - val_images)
        chosen.append("batch_size")
    # measured on 200 to 2,000 images in and out of domain (BENCHMARKS.md): early stopping
    # ends runs after 10 to 40 epochs at any size, and a lower rate cost the new domain more
    # than it kept of the old one, so these stay the same at every size
    defaults = {"epochs": 60, "lr": 5e-4, "patience": 8}
    given = {"epochs": epochs, "lr": lr, "patience": patience}
    values = {}
    for name, value in given.items():
        values[name] = defaults[name] if value is None else value
        if value is None:
            chosen.append(name)
    return Plan(val_images, batch_size, values["epochs"], values["lr"], values["patience"],
                tuple(chosen))


def differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    """The architecture fields in which two model configs differ (text models by name)."""
    def value(config, name):
        v = getattr(config, name)
        return Path(v).name if name == "text_model" and v else v

    return [name for name in ARCHITECTURE if value(a, name) != value(b, name)]


@dataclass
class Start:
    """Where the heads start: a trained model (``model``, loaded from ``source``) or fresh."""

    model: HashModel | None
    source: str | None
    reason: str


def choose_start(init: str, model_config: ModelConfig, n_images: int,
                 device: str | None = None) -> Start:
    """The starting heads for ``init``: "auto", "none", a model folder or a shipped name.

    "auto" starts from the shipped default when it has the architecture asked for and the
    data has at most :data:`SMALL_DATA` images, else from fresh heads.

    Args:
        model_config: the model asked for (compared with the shipped model's for "auto").
        n_images: images in the user's data.

    Returns:
        the :class:`Start`, with the reason to print.
    """
    if init == "none":
        return Start(None, None, "fresh heads (--init none)")
    if init != "auto":
        model = HashModel.load(init, device=device)
        return Start(model, init, f"the heads of {init} (its config replaces --bits, --backbone, "
                                  "--text-model and the head options)")
    if n_images > SMALL_DATA:
        return Start(None, None, f"fresh heads: {n_images} images is more than {SMALL_DATA:,} "
                                 "(--init default starts from the shipped model anyway)")
    shipped = HashModel.load("default", device=device)
    diff = differences(model_config, shipped.config)
    if diff:
        flags = ", ".join(FLAGS[name] for name in diff)
        return Start(None, None, f"fresh heads: the shipped model differs in {flags}")
    return Start(shipped, "default", "the shipped model's heads (--init none starts from fresh heads)")


def reference_model(start: Start, model_config: ModelConfig,
                    device: str | None = None) -> tuple[HashModel | None, str | None]:
    """The model the trained one must beat.

    Returns:
        (a fresh copy of the starting model, its name), else (the shipped default,
        "default") when it reads the same backbone features (its heads, bits and code sizes
        may differ: search quality is compared, not the codes), else (None, None).
    """
    if start.source is not None:
        return HashModel.load(start.source, device=device), start.source
    shipped = HashModel.load("default", device=device)
    if set(differences(model_config, shipped.config)) & set(FEATURES):
        return None, None
    return shipped, "default"


def comparable(start: Start, model_config: ModelConfig) -> str | None:
    """The name of the model a training run would be compared with, if it could hold images
    out (None when none reads the same features)."""
    if start.source is not None:
        return start.source
    shipped = HashModel.load("default").config
    return None if set(differences(model_config, shipped)) & set(FEATURES) else "default"


@dataclass
class Verdict:
    """The trained model against the reference on the same held-out images (Hamming R@sum)."""

    trained_rsum: float
    reference_rsum: float
    low: float  # the gain's 5th percentile over resamples of the held-out images
    high: float  # its 95th percentile
    images: int
    keep_trained: bool  # the gain is above zero with 95% confidence

    @property
    def gain(self) -> float:
        return self.trained_rsum - self.reference_rsum

    def summary(self) -> dict:
        return {"trained_rsum": self.trained_rsum, "reference_rsum": self.reference_rsum,
                "gain": self.gain, "gain_90pct": [self.low, self.high],
                "held_out_images": self.images, "trained_is_better": self.keep_trained}


def _per_query(model: HashModel, raw: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """Per caption and per image R@1 + R@5 + R@10 (in percent) of a model over the Hamming ranking."""
    from crossbit.encoders.codes import hamming_matrix
    from crossbit.encoders.training.evaluate import KS, relevance
    from crossbit.encoders.training.retrieval_metrics import ranking_metrics

    for head in (model.image_head, model.text_head):
        head.eval()
    images = model.encode_image_features(raw.images)
    texts = model.encode_text_features(raw.texts)
    rel = relevance(raw.caption_image, len(images.codes), raw.labels)
    dist = hamming_matrix(texts.codes, images.codes)
    t2i, i2t = ranking_metrics(dist, rel, KS), ranking_metrics(dist.T, rel.T, KS)
    return (100 * sum(t2i[f"recall@{k}"] for k in KS),
            100 * sum(i2t[f"recall@{k}"] for k in KS))


def compare(trained: HashModel, reference: HashModel, held_raw: FeatureSet,
            resamples: int = 2000, seed: int = 0) -> Verdict:
    """Score both models on the same held-out images and resample the images to see whether
    the trained model's gain is more than luck.

    The held-out images also chose the trained model's epoch, which flatters it; a gain is
    only counted when it stays above zero in 95% of the resamples (images drawn with
    replacement, each with its captions).

    Args:
        held_raw: backbone features of the held-out images and their captions.

    Returns:
        the :class:`Verdict`.
    """
    t_cap, t_img = _per_query(trained, held_raw)
    r_cap, r_img = _per_query(reference, held_raw)
    d_cap, d_img = t_cap - r_cap, t_img - r_img
    n = len(d_img)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    cap_w = weights[:, held_raw.caption_image]
    gains = (cap_w @ d_cap) / np.maximum(cap_w.sum(1), 1) + (weights @ d_img) / n
    low, high = np.percentile(gains, [5, 95])
    verdict = Verdict(float(t_cap.mean() + t_img.mean()), float(r_cap.mean() + r_img.mean()),
                      float(low), float(high), n, bool(low > 0))
    log.info("held-out comparison: %s", verdict.summary())
    return verdict


def with_replay(train: FeatureSet, replay: FeatureSet, share: float, seed: int) -> FeatureSet:
    """The training features with images (and their captions) drawn from ``replay``.

    The starting model's own data keeps what it knew while it learns the new pairs.

    Args:
        share: the replayed images' share of the result (0 < share < 1); as many as
            ``replay`` holds at most.
        seed: chooses which replay images.

    Returns:
        ``train`` followed by the replayed images and their captions.
    """
    if not 0 < share < 1:
        raise ValueError(f"the replay share must be between 0 and 1, got {share}")
    k = min(len(replay.images), int(round(len(train.images) * share / (1 - share))))
    picks = np.sort(np.random.default_rng(seed).choice(len(replay.images), k, replace=False))
    from crossbit.encoders.training.recipes import subset_features

    extra = subset_features(replay, picks)
    if (train.image_views is None) != (extra.image_views is None) or \
            (train.labels is None) != (extra.labels is None):
        raise ValueError("replay data must have the same image views (and labels or none)")
    return FeatureSet(
        images=np.concatenate([train.images, extra.images]),
        texts=np.concatenate([train.texts, extra.texts]),
        caption_image=np.concatenate([train.caption_image, extra.caption_image + len(train.images)]),
        image_views=None if train.image_views is None
        else np.concatenate([train.image_views, extra.image_views], axis=1),
        labels=None if train.labels is None else np.concatenate([train.labels, extra.labels]))


def verdict_line(verdict: Verdict, reference: str, written: str, out: str) -> tuple[str, bool]:
    """What was written and why, in words and figures; and whether it is a warning (the
    trained model written without beating the reference)."""
    figures = (f"Hamming R@sum {verdict.trained_rsum:.1f} against {verdict.reference_rsum:.1f} "
               f"for {reference} on the {verdict.images} held-out images ({verdict.gain:+.1f}; "
               f"{verdict.low:+.1f} to {verdict.high:+.1f} in 90% of resamples of those images)")
    if written == "reference" and verdict.low == verdict.high == 0:
        return (f"kept {reference}: no epoch of training beat it on the {verdict.images} held-out "
                f"images (Hamming R@sum {verdict.reference_rsum:.1f}). Wrote {reference} "
                f"unchanged to {out} (--keep-trained writes the trained model instead)"), False
    if written == "reference":
        return (f"kept {reference}: the trained model did not beat it: {figures}. Wrote "
                f"{reference} unchanged to {out} (--keep-trained writes the trained model "
                "instead)"), False
    if verdict.keep_trained:
        return f"wrote the trained model: it beats {reference}: {figures}", False
    return (f"the trained model does not beat {reference}: {figures}; written anyway as "
            "--keep-trained asks"), True
