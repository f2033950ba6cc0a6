"""A trained model's checkpoint: heads and config, with the options, data and held-out figures."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from crossbit.encoders.model import HashModel
from crossbit.encoders.training.options import TrainConfig, TrainResult

REPORT_KEYS = ("text_to_image", "image_to_text", "float", "bits", "images", "captions")


def save_checkpoint(model: HashModel, cfg: TrainConfig, result: TrainResult,
                    directory: str | Path, data: dict, with_backbones: bool = False,
                    with_text_model: bool = False, notes: dict | None = None) -> None:
    """Write heads + config (options, results, data and the held-out figures under ``extra``).

    ``result.report`` is the kept weights' report on the training images held out for
    early stopping (``extra.held_out``), never a dev or test split.

    Args:
        with_backbones: also write both (fine-tuned) backbones beside the heads.
        with_text_model: also write the (tuned) text model beside the heads.
    """
    report = result.report
    held_out = {k: report.get(k) for k in REPORT_KEYS if k in report}
    if report.get("shipped_model"):  # the shipped model on the same held-out images
        held_out["shipped_model"] = {k: report["shipped_model"].get(k) for k in REPORT_KEYS
                                     if k in report["shipped_model"]}
    model.config.extra = {"training": asdict(cfg), "results": result.summary(), "data": data,
                          "held_out": held_out,
                          "trained_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                          **(notes or {})}
    model.save(directory, with_backbones=with_backbones, with_text_model=with_text_model)
