"""The hash heads on ONNX Runtime: whole batches, each row's codes and embedding its own."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path

import torch

from crossbit.encoders.heads import Encoded, HashHead  # noqa: F401 (Encoded: what a run gives)
from crossbit.encoders.onnx_runs import HeadRun, cache_dir

log = logging.getLogger(__name__)


class _HeadGraph(torch.nn.Module):
    """Features -> (tanh outputs, float embedding before normalisation), with the image
    class semantics appended first when given."""

    def __init__(self, head: HashHead, semantics: torch.nn.Module | None):
        super().__init__()
        self.head = head
        self.semantics = semantics

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.semantics is not None:
            features = torch.cat([features, self.semantics(features)], dim=1)
        tanh, emb = self.head(features)
        return tanh, (emb if emb is not None else tanh)


def _modules(head: HashHead, semantics) -> list[torch.nn.Module]:
    return [head] + ([semantics] if semantics is not None else [])


def weights_digest(head: HashHead, semantics=None) -> str:
    """SHA-256 of a head's (and its semantics') tensors: names the exported graph."""
    digest = hashlib.sha256()
    for module in _modules(head, semantics):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class OnnxHead(HeadRun):
    """:class:`HeadRun` for a torch head's exported graph: (n, d) float32 features ->
    :class:`Encoded`, a whole batch per run, each row's codes and embedding its own.

    Built for weights that no longer change: :meth:`current` says whether the head still
    has the weights it was exported with.
    """

    def __init__(self, path: str | os.PathLike, head: HashHead, semantics=None):
        super().__init__(path)
        self._modules = _modules(head, semantics)
        self._versions = self._stamp()

    def _stamp(self) -> list[int]:
        return [t._version for m in self._modules for t in (*m.parameters(), *m.buffers())]

    def current(self) -> bool:
        """False once any weight of the head was changed in place (training, loading)."""
        return self._stamp() == self._versions


_lock = threading.Lock()


def onnx_head(head: HashHead, semantics=None) -> OnnxHead:
    """A head (with the image class semantics, if given) exported to ONNX once per weights.

    Args:
        head: the hash head, in eval mode.
        semantics: the image head's class semantics (``ClassSemantics``), or None.

    Returns:
        the :class:`OnnxHead`.
    """
    if head.training:
        raise ValueError("export a head in eval mode")
    in_dim = head.mean.shape[0] - (semantics.class_embeddings.shape[1] if semantics is not None
                                   else 0)
    path = cache_dir() / "onnx" / f"head-{weights_digest(head, semantics)}-{in_dim}.onnx"
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            graph = _HeadGraph(head, semantics).eval()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, (torch.zeros(2, in_dim),), str(tmp),
                                  input_names=["features"], output_names=["tanh", "embedding"],
                                  opset_version=17, dynamo=False,
                                  dynamic_axes={"features": {0: "n"}, "tanh": {0: "n"},
                                                "embedding": {0: "n"}})
            os.replace(tmp, path)
            log.info("exported a hash head to %s", path)
    return OnnxHead(Path(path), head, semantics)
