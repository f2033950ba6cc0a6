"""ONNX Runtime for the image backbone: export once, then run on the CPU about 6x faster than eager."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path

import torch

from crossbit.encoders.backbones import IMAGE_SIZE, create_backbone
from crossbit.encoders.onnx_runs import OnnxBackbone, cache_dir, cpu_session  # noqa: F401 (theirs)

log = logging.getLogger(__name__)


def export_backbone(name: str, path: str | os.PathLike, weights: str | None = None) -> Path:
    """Export an image backbone to ONNX (dynamic batch), written to a temp file then renamed.

    Returns:
        the path written.
    """
    module, _ = create_backbone(name, weights)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's constant-folding notes: nothing to act on
        torch.onnx.export(module, (example,), str(tmp), input_names=["images"],
                          output_names=["features"], opset_version=17, dynamo=False,
                          dynamic_axes={"images": {0: "n"}, "features": {0: "n"}})
    os.replace(tmp, path)
    log.info("exported %s to %s", name, path)
    return path


_export_lock = threading.Lock()


def onnx_backbone(name: str, weights: str | None = None, threads: int | None = None) -> OnnxBackbone:
    """The ONNX Runtime version of a backbone, exported into the cache on first use."""
    if weights is not None:
        digest = hashlib.sha1(os.path.abspath(weights).encode()).hexdigest()[:10]
        tag = f"{name}-{digest}"
    else:
        tag = name
    path = cache_dir() / "onnx" / f"{tag}-torch{torch.__version__.split('+')[0]}.onnx"
    with _export_lock:
        if not path.exists():
            export_backbone(name, path, weights)
    return OnnxBackbone(path, threads)
