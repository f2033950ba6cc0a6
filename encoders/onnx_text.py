"""ONNX Runtime for the text encoder: fp32 (the same features, faster) or int8 (per-token activations)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path

import torch

from crossbit.encoders.onnx_quant import quantize_int8
from crossbit.encoders.onnx_runs import ROWS_PER_RUN, TokenStatesRun, cache_dir  # noqa: F401 (theirs)
from crossbit.encoders.text_models import MAX_TOKENS, resolve_text_model, text_model_id

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")


class _TokenStates(torch.nn.Module):
    """The transformer's last hidden states, (n, t, d), as one exportable graph; the mean
    pooling is done outside it (see ``onnx_runs.TokenStatesRun``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_text_model(name_or_path: str, path: str | os.PathLike) -> Path:
    """Export a text model's token states to ONNX (dynamic batch and length).

    Eager attention is used for the export: the scaled-dot-product attention path traces
    to a graph that gives wrong features under transformers 5 (differences near 1.0).
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory = resolve_text_model(name_or_path)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in a server's first start
    try:
        model = AutoModel.from_pretrained(directory, attn_implementation="eager").eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokens = AutoTokenizer.from_pretrained(directory)(
        ["a dog runs", "two people sit on a bench"], padding=True, return_tensors="pt")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_TokenStates(model), (tokens["input_ids"], tokens["attention_mask"]),
                          str(tmp), input_names=["input_ids", "attention_mask"],
                          output_names=["tokens"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "n", 1: "t"},
                                        "attention_mask": {0: "n", 1: "t"},
                                        "tokens": {0: "n", 1: "t"}})
    os.replace(tmp, path)
    log.info("exported text model %s to %s", name_or_path, path)
    return path


class OnnxTextEncoder(TokenStatesRun):
    """:class:`TokenStatesRun` with the text model's own tokenizer (from its Hugging Face
    folder, through transformers): list[str] -> (n, d) float32 mean-pooled features.

    A text's features are a function of that text alone, whatever else is in the call
    (``batch_invariant``). The Rust tokenizer is taken out of the transformers wrapper
    (which re-configures it on every call) and configured once, so threads share it.
    """

    def __init__(self, path: str | os.PathLike, tokenizer_dir: str, threads: int | None = None,
                 precision: str = "fp32"):
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        wrapper = AutoTokenizer.from_pretrained(tokenizer_dir)
        super().__init__(path, Tokenizer.from_str(wrapper.backend_tokenizer.to_str()),
                         wrapper.pad_token_id or 0, MAX_TOKENS, threads, precision)


_lock = threading.Lock()


def onnx_text_encoder(name_or_path: str, precision: str = "fp32",
                      threads: int | None = None) -> OnnxTextEncoder:
    """The ONNX Runtime version of a text model, exported (and quantized) into the cache once."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    directory = resolve_text_model(name_or_path)
    digest = hashlib.sha1(text_model_id(name_or_path).encode()).hexdigest()[:10]
    # "-tokens": graphs of token states (earlier ones pooled inside, with per-tensor int8)
    base = cache_dir() / "onnx" / f"text-{digest}-torch{torch.__version__.split('+')[0]}-tokens"
    fp32 = base.with_name(base.name + "-fp32.onnx")
    path = fp32 if precision == "fp32" else base.with_name(base.name + "-int8.onnx")
    with _lock:
        if not fp32.exists():
            export_text_model(directory, fp32)
        if not path.exists():
            quantize_int8(fp32, path)
    return OnnxTextEncoder(path, directory, threads, precision)
