"""Which runtime encodes images and texts: ONNX Runtime on the CPU (int8 where measured safe), else torch."""

from __future__ import annotations

import logging

from crossbit.encoders.config import IMAGE_RUNTIMES, TEXT_RUNTIMES
from crossbit.encoders.model import HashModel

log = logging.getLogger(__name__)


def one_torch_thread(model: HashModel) -> None:
    """On the CPU, run torch's own ops (the heads, one item at a time) on one intra-op thread.

    Each item goes through its head alone (``item_outputs``): many small torch calls. On
    torch's default two OpenMP threads each call wakes the pool, whose threads spin and
    take the cores from ONNX Runtime: two threads encoding texts side by side, each text
    and head alone, ran at 234 texts/s with two torch threads and 667 with one; batches
    of 64 with batched heads (the code before) at 561 and 1,009 (in process, 2 cores,
    2026-12-03). Parallelism comes from the batchers' workers instead (DESIGN.md: one
    thread per call). A process-wide setting: for the server and ``crossbit reindex``.

    Args:
        model: the model that will encode; nothing changes off the CPU.
    """
    if model.device.type == "cpu":
        import torch

        torch.set_num_threads(1)


def use_head_runtime(model: HashModel, runtime: str = "auto") -> None:
    """Run the hash heads (and the image class semantics) on ONNX Runtime, whole batches.

    ``auto``: on the CPU, for heads that will not change any more (serving, reindexing,
    evaluating); a head changed later (training) falls back to torch one row at a time.
    ``torch``: torch one row at a time (``heads.item_outputs``). Either way each item's
    code and embedding are its own, whatever else is in the batch.

    Args:
        model: the model.
        runtime: ``auto`` or ``torch``.
    """
    if runtime not in ("auto", "torch"):
        raise ValueError(f"head runtime must be auto or torch, got {runtime!r}")
    model.head_runtimes = {}
    if runtime == "torch" or model.device.type != "cpu":
        return
    from crossbit.encoders.onnx_heads import onnx_head

    try:
        model.head_runtimes = {"text": onnx_head(model.text_head),
                               "image": onnx_head(model.image_head, model.semantics)}
    except Exception as exc:
        log.warning("ONNX Runtime unavailable for the heads (%s); using torch", exc)


def use_image_runtime(model: HashModel, runtime: str = "auto") -> None:
    """Run the image backbone through ONNX Runtime on the CPU (about 6x faster than eager)."""
    if runtime not in IMAGE_RUNTIMES:
        raise ValueError(f"image runtime must be one of {IMAGE_RUNTIMES}, got {runtime!r}")
    if runtime == "torch" or (runtime == "auto" and model.device.type != "cpu"):
        return
    from crossbit.encoders.onnx_image import onnx_backbone

    try:
        model.image_runtime = onnx_backbone(model.config.image_backbone, model.config.image_weights)
    except Exception as exc:
        if runtime == "onnx":
            raise
        log.warning("ONNX Runtime unavailable (%s); using torch for images", exc)


INT8_TEXT_MODELS = ("minilm-l6",)  # int8 measured as good as fp32 on dev for these only


def use_text_runtime(model: HashModel, runtime: str = "auto", threads: int | None = None) -> None:
    """Pick the text encoder's runtime.

    ``auto``: on the CPU, ONNX Runtime int8 for MiniLM (per-channel int8 weights and
    per-token activations: about 1.7x fp32's texts/s, dev recall within a point of fp32's
    in the Hamming ranking and the re-ranked answer) and fp32 for other text models (the
    per-tensor int8 cost MPNet 12 R@sum on dev, BENCHMARKS.md); torch elsewhere;
    ``onnx``: ONNX Runtime fp32 (the same features as torch); ``int8``: ONNX Runtime int8;
    ``torch``: eager PyTorch.
    """
    if runtime not in TEXT_RUNTIMES:
        raise ValueError(f"text runtime must be one of {TEXT_RUNTIMES}, got {runtime!r}")
    if runtime == "torch" or (runtime == "auto" and model.device.type != "cpu"):
        model.text_runtime = None
        return
    from crossbit.encoders.onnx_text import onnx_text_encoder

    if runtime == "auto":
        runtime = "int8" if model.config.text_model in INT8_TEXT_MODELS else "onnx"
        auto = True
    else:
        auto = False
    try:
        model.text_runtime = onnx_text_encoder(model.config.text_model,
                                               "fp32" if runtime == "onnx" else "int8", threads)
    except Exception as exc:
        if not auto:
            raise
        log.warning("ONNX Runtime unavailable for text (%s); using torch", exc)
