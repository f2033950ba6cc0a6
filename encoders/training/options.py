"""Training options (what to do) and a training run's result (what it found), kept apart."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

OBJECTIVES = ("infonce", "triplet", "dcmh")


@dataclass
class TrainConfig:
    """Training options (saved in the checkpoint's config under ``extra.training``)."""

    objective: str = "infonce"  # infonce | triplet (VSE++ max violation) | dcmh (needs labels)
    margin: float = 0.2  # triplet margin
    temperature: float = 0.1  # InfoNCE temperature
    sign_weight: float = 1.0  # weight of the same ranking loss on straight-through sign codes
    quant_weight: float = 0.1  # quantization term weight
    balance_weight: float = 0.1  # bit-balance term weight
    epochs: int = 60
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 1e-5
    patience: int = 8  # epochs without dev improvement before stopping
    flip: bool = True  # use horizontally flipped image features as augmentation
    crop_views: int = 0  # random-crop views of each image (cached features) as augmentation;
    # when fine-tuning, any value > 0 crops every image afresh at each step
    rounds: int = 1  # passes over the images per epoch, each with another random caption
    pseudo_captions: bool = True  # add each image's class semantics as one more "caption"
    all_captions: bool = True  # infonce: every caption of each batch image, not one at random
    distill: float = 1.0  # weight of matching a float teacher's in-batch similarities; 0 = off
    teacher_dim: int = 512  # width of the float teacher, trained first on the same features
    teacher_temperature: float = 0.1  # softmax temperature of the teacher's similarities
    seed: int = 0
    seeds: int = 1  # train seeds seed..seed+seeds-1, keep the best on the held-out images
    finetune: bool = False  # train backbones end to end (the GPU way)
    backbone_lr_scale: float = 0.05  # backbone learning rate = lr * this, when fine-tuning
    tune_text: bool = False  # then tune the text encoder with the heads (images from the cache)
    text_lr: float = 2e-5  # the text encoder's learning rate when tuning it
    tune_lr: float = 1e-4  # the heads' learning rate when tuning the text encoder with them
    tune_epochs: int = 6  # most epochs of text tuning (early stopping on the held-out images)
    tune_rounds: int = 3  # captions drawn per image per tuning epoch
    tune_patience: int = 2  # tuning epochs without a better held-out score before stopping

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {OBJECTIVES}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")
        if self.distill < 0:
            raise ValueError(f"distill must be >= 0, got {self.distill}")
        if self.crop_views < 0:
            raise ValueError(f"crop_views must be >= 0, got {self.crop_views}")
        if self.tune_text and self.finetune:
            raise ValueError("tune_text and finetune exclude each other (finetune trains both towers)")
        if min(self.tune_epochs, self.tune_rounds, self.tune_patience) < 1:
            raise ValueError("tune_epochs, tune_rounds and tune_patience must be at least 1")

    @property
    def uses_teacher(self) -> bool:
        """Distillation applies to the ranking objectives (dcmh ranks by labels instead)."""
        return self.distill > 0 and self.objective != "dcmh"

    @property
    def multi_caption(self) -> bool:
        return self.all_captions and self.objective == "infonce"


@dataclass
class TrainResult:
    """What a training run found: the kept weights' report and how it got there.

    ``report`` is the held-out report of the kept weights (the last epoch's losses when
    nothing was held out); ``history`` has one entry per epoch; ``seed_scores`` the
    held-out R@sum of each seed tried; ``teacher_heldout_rsum`` the float teacher's.
    """

    report: dict
    history: list[dict] = field(default_factory=list)
    seed: int = 0
    seed_scores: list[dict] = field(default_factory=list)
    teacher_heldout_rsum: float | None = None

    def summary(self) -> dict:
        """Everything but the report, as saved in the checkpoint (``extra.results``)."""
        return {"seed": self.seed, "seed_scores": self.seed_scores,
                "teacher_heldout_rsum": self.teacher_heldout_rsum, "history": self.history}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
