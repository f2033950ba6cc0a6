"""ONNX Runtime for the text encoder: fp32 (the same features, faster) or int8 (per-token activations)."""

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
from crossbit.encoders.onnx_quant import quantize_int8
from crossbit.encoders.text_models import MAX_TOKENS, resolve_text_model, text_model_id

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
ROWS_PER_RUN = 8  # texts per ONNX Runtime run (sorted by length; see OnnxTextEncoder)


class _TokenStates(torch.nn.Module):
    """The transformer's last hidden states, (n, t, d), as one exportable graph; the mean
    pooling is done outside it (see OnnxTextEncoder)."""

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

    directory = resolve_text_model(name_or_path)
    model = AutoModel.from_pretrained(directory, attn_implementation="eager").eval()
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


class OnnxTextEncoder:
    """Callable list[str] -> (n, d) float32 mean-pooled features through ONNX Runtime.

    A text's features are a function of that text alone, whatever else is in the call
    (``batch_invariant``): the graph's rows do not mix texts (int8 activations are
    quantized per token, see ``onnx_quant``), and the mean pooling runs here over each
    text's own tokens.

    Safe to call from several threads at once: the Rust tokenizer is configured once and
    only read (the transformers wrapper re-configures it on every call), and ONNX Runtime
    sessions run concurrently.
    """

    batch_invariant = True

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
        """Features in input order; runs of at most ``ROWS_PER_RUN`` texts of similar length.

        Captions are short (about 15 tokens on Flickr8k) and vary, so a batch padded to its
        longest is about a third padding; sorting by length and running halves of a 16-text
        batch cut the encoder's time by 14% (int8) to 19% (fp32) here; one run per text
        gave 29 to 49% fewer texts/s than runs of 8 (each run reads all the weights). The padding
        and the run's other texts change no text's features: each is pooled from its own
        token states (``ReduceSum`` over a run's tokens gave other last bits for other
        runs; numpy's sum over one text's rows does not), and no other operation of the
        graph mixed texts in generated batches (ONNX Runtime does not promise it:
        tests/test_batch_invariance.py checks it).

        Args:
            texts: the texts; empty in, (0, d) out.

        Returns:
            (n, d) float32 mean-pooled features.
        """
        ids, mask = self.token_ids(texts)
        lengths = mask.sum(1)
        order = np.argsort(lengths, kind="stable")
        out = None
        for start in range(0, len(order), ROWS_PER_RUN):
            rows = order[start : start + ROWS_PER_RUN]
            longest = int(lengths[rows].max())
            states = self.session.run(None, {"input_ids": ids[rows, :longest],
                                             "attention_mask": mask[rows, :longest]})[0]
            if out is None:
                out = np.empty((len(texts), states.shape[2]), dtype=np.float32)
            for k, row in enumerate(rows.tolist()):
                n = int(lengths[row])
                out[row] = np.add.reduce(states[k, :n], axis=0) / np.float32(n)
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
