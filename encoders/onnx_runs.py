"""ONNX Runtime runs without torch: the image backbone, text token states pooled per text, the hash heads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from crossbit.encoders.codes import Encoded, pack_signs

ROWS_PER_RUN = 8  # texts per ONNX Runtime run (sorted by length; see TokenStatesRun)


def cache_dir() -> Path:
    """Where exported models are kept: $CROSSBIT_CACHE or ~/.cache/crossbit."""
    return Path(os.environ.get("CROSSBIT_CACHE", Path.home() / ".cache" / "crossbit"))


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


class TokenStatesRun:
    """Callable list[str] -> (n, d) float32 mean-pooled features, from a graph of token states.

    A text's features are a function of that text alone, whatever else is in the call
    (``batch_invariant``): the graph's rows do not mix texts (int8 activations are
    quantized per token, see ``onnx_quant``), and the mean pooling runs here over each
    text's own tokens.

    Safe to call from several threads at once: the Rust tokenizer is configured once and
    only read, and ONNX Runtime sessions run concurrently.

    Args:
        path: the ONNX graph (inputs ``input_ids``, ``attention_mask``; output the token states).
        tokenizer: a ``tokenizers.Tokenizer``; its padding is turned off and its
            truncation set to ``max_tokens`` here.
        pad_id: the id padding the runs' shorter texts.
        max_tokens: the most tokens of a text (the rest is cut).
        threads: ONNX Runtime intra-op threads (None: its default).
        precision: ``fp32`` or ``int8`` (what the graph is; said, not checked).
    """

    batch_invariant = True

    def __init__(self, path: str | os.PathLike, tokenizer, pad_id: int, max_tokens: int,
                 threads: int | None = None, precision: str = "fp32"):
        self.path = str(path)
        self.precision = precision
        self.session = cpu_session(self.path, threads, spinning=False)
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.pad_id = pad_id

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


class HeadRun:
    """Callable (n, d) float32 features -> :class:`Encoded` through a hash head's graph
    (inputs ``features``; outputs ``tanh`` and ``embedding``), a whole batch per run.

    No row's outputs moved with the other rows of a run, for 1 to 40 rows (ONNX Runtime's
    matrix products gave each row the same last bits whatever the row count, where torch's
    CPU Linear did not at 40 rows; ONNX Runtime does not promise it: the tests check it),
    and each embedding is normalised on its own row. About 21 us per text row against
    109 through torch one row at a time, 47 against 432 per image (2 cores, batches of 16,
    2026-12-03).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.session = cpu_session(self.path, threads=1, spinning=False)

    def __call__(self, features: np.ndarray) -> Encoded:
        """Codes and unit-length embeddings of (n, d) features, n >= 0."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if not len(features):
            width = self.session.get_outputs()[1].shape[-1]
            bits = self.session.get_outputs()[0].shape[-1]
            return Encoded(np.zeros((0, bits // 8), np.uint8), np.zeros((0, width), np.float32))
        tanh, emb = self.session.run(None, {"features": features})
        norms = np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), np.float32(1e-12))
        return Encoded(pack_signs(tanh), (emb / norms).astype(np.float32))
