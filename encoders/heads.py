"""Hash heads: z-scored features -> MLP -> dense layer -> tanh (training) / sign (inference)."""

from __future__ import annotations

import torch
from torch import nn


class HashHead(nn.Module):
    """Maps backbone features to ``bits`` tanh outputs (and optionally a float embedding).

    The input is z-scored with statistics fixed from the training features
    (buffers ``mean`` and ``std``, saved with the weights).
    """

    def __init__(self, in_dim: int, bits: int, hidden: int = 1024, dropout: float = 0.1,
                 embed_dim: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if hidden:
            self.trunk = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)
            )
            width = hidden
        else:
            self.trunk = nn.Dropout(dropout)
            width = in_dim
        self.hash = nn.Linear(width, bits)
        self.embed = nn.Linear(width, embed_dim) if embed_dim else None

    def reset_parameters(self) -> None:
        """Fresh random weights from the current torch seed (training starts from here)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def set_input_stats(self, features: torch.Tensor) -> None:
        """Fix the z-scoring statistics from a (n, in_dim) sample of training features."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (tanh outputs (n, bits), float embedding (n, embed_dim) or None)."""
        h = self.trunk((features - self.mean) / self.std)
        emb = self.embed(h) if self.embed is not None else None
        return torch.tanh(self.hash(h)), emb


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """sign(x) in the forward pass, identity gradient in the backward pass (straight-through)."""
    hard = torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))
    return x + (hard - x).detach()
