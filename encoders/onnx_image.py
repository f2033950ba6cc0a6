"""ONNX Runtime for the image backbone: export once, then run on the CPU about 6x faster than eager."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch

from crossbit.encoders.backbones import IMAGE_SIZE, create_backbone

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where exported models are kept: $CROSSBIT_CACHE or ~/.cache/crossbit."""
    return Path(os.environ.get("CROSSBIT_CACHE", Path.home() / ".cache" / "crossbit"))


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
    with torch.no_grad():
        torch.onnx.export(module, (example,), str(tmp), input_names=["images"],
                          output_names=["features"], opset_version=17, dynamo=False,
                          dynamic_axes={"images": {0: "n"}, "features": {0: "n"}})
    os.replace(tmp, path)
    log.info("exported %s to %s", name, path)
    return path


def cpu_session(path: str | os.PathLike, threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime CPU session; ``spinning=False`` stops its threads busy-waiting
    between runs (in a server the cores are needed by gRPC and FAISS)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxBackbone:
    """Callable (n, 3, 224, 224) float32 array -> (n, d) features through ONNX Runtime.

    ``batch_invariant``: no image's features moved with the other images of its run in
    generated batches (tests/test_batch_invariance.py, default threads; by hand also on
    1 and 2 threads). ONNX Runtime does not promise it; the tests check it. So batches
    run whole.
    """

    batch_invariant = True

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = str(path)
        self.session = cpu_session(self.path, threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": np.ascontiguousarray(batch, np.float32)})[0]


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
