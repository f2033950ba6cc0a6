"""ONNX Runtime for the text encoder: fp32 (the same features, faster) or per-channel int8."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from crossbit.encoders.onnx_image import cache_dir, cpu_session
from crossbit.encoders.text_models import MAX_TOKENS, resolve_text_model, text_model_id

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")


class _MeanPooled(torch.nn.Module):
    """The transformer plus mean pooling over the attention mask, as one exportable graph."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def export_text_model(name_or_path: str, path: str | os.PathLike) -> Path:
    """Export a text model with mean pooling to ONNX (dynamic batch and length).

    Eager attention is used for the export: the scaled-dot-product attention path traces
    to a graph that gives wrong features under transformers 5 (differences near 1.0).
    """
    from transformers import AutoModel, AutoTokenizer

    directory = resolve_text_model(name_or_path)
    model = AutoModel.from_pretrained(directory, attn_implementation="eager").eval()
    tokens = AutoTokenizer.from_pretrained(directory)(
        ["a dog runs", "two people sit on a bench"], padding=True, return_tensors="pt")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_MeanPooled(model), (tokens["input_ids"], tokens["attention_mask"]),
                          str(tmp), input_names=["input_ids", "attention_mask"],
                          output_names=["features"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "n", 1: "t"},
                                        "attention_mask": {0: "n", 1: "t"},
                                        "features": {0: "n"}})
    os.replace(tmp, path)
    log.info("exported text model %s to %s", name_or_path, path)
    return path


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Dynamic int8 quantization of every MatMul weight, one scale per output channel.

    Per-channel scales keep the features close to fp32 (mean cosine about 0.99 on
    Flickr8k captions) where one scale per tensor lost far more (about 0.96).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    tmp = dst.with_suffix(f".{os.getpid()}.tmp")
    quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    os.replace(tmp, dst)
    return dst


class OnnxTextEncoder:
    """Callable list[str] -> (n, d) float32 mean-pooled features through ONNX Runtime.

    Safe to call from several threads at once: the Rust tokenizer is configured once and
    only read (the transformers wrapper re-configures it on every call), and ONNX Runtime
    sessions run concurrently.
    """

    def __init__(self, path: str | os.PathLike, tokenizer_dir: str, threads: int | None = None,
                 precision: str = "fp32"):
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        self.path = str(path)
        self.precision = precision
        self.session = cpu_session(self.path, threads, spinning=False)
        wrapper = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.tokenizer = Tokenizer.from_str(wrapper.backend_tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.pad_id = wrapper.pad_token_id or 0

    def token_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int64 (n, longest), padded on the right."""
        encodings = self.tokenizer.encode_batch(list(texts))
        longest = max((len(e.ids) for e in encodings), default=0)
        ids = np.full((len(encodings), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return ids, mask

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Features in input order, each text in its own run over its own tokens (no padding).

        A text's features are a function of that text alone: int8 quantizes activations
        with one scale per run's tensor (``DynamicQuantizeLinear``), so texts run together
        (and the padding to the longest of them) moved each other's features, up to 5 of
        64 code bits; in fp32 the padded matrix shapes moved the last float bits. One run
        per text costs int8 nothing measurable here (per-run overhead against less padding;
        BENCHMARKS.md, "Codes that do not depend on the batch").

        Args:
            texts: the texts; empty in, (0, d) out.

        Returns:
            (n, d) float32 mean-pooled features.
        """
        out = None
        for row, encoding in enumerate(self.tokenizer.encode_batch(list(texts))):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            feats = self.session.run(None, {"input_ids": ids,
                                            "attention_mask": np.ones_like(ids)})[0]
            if out is None:
                out = np.empty((len(texts), feats.shape[1]), dtype=feats.dtype)
            out[row] = feats[0]
        if out is None:  # no texts
            return np.zeros((0, self.session.get_outputs()[0].shape[-1]), np.float32)
        return out


_lock = threading.Lock()


def onnx_text_encoder(name_or_path: str, precision: str = "fp32",
                      threads: int | None = None) -> OnnxTextEncoder:
    """The ONNX Runtime version of a text model, exported (and quantized) into the cache once."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    directory = resolve_text_model(name_or_path)
    digest = hashlib.sha1(text_model_id(name_or_path).encode()).hexdigest()[:10]
    base = cache_dir() / "onnx" / f"text-{digest}-torch{torch.__version__.split('+')[0]}"
    fp32 = base.with_name(base.name + "-fp32.onnx")
    path = fp32 if precision == "fp32" else base.with_name(base.name + "-int8.onnx")
    with _lock:
        if not fp32.exists():
            export_text_model(directory, fp32)
        if not path.exists():
            quantize_int8(fp32, path)
    return OnnxTextEncoder(path, directory, threads, precision)
