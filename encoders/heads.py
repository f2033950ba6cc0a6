"""Hash heads: z-scored features -> MLP -> dense layer -> tanh (training) / sign (inference)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossbit.encoders.codes import Encoded, pack_signs


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

    @torch.no_grad()
    def forward_row(self, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`forward` in eval mode for one (1, in_dim) row, through the functions the
        modules call (about a third cheaper than the modules' calls, the same numbers)."""
        h = (row - self.mean) / self.std
        if isinstance(self.trunk, nn.Sequential):
            linear, norm = self.trunk[0], self.trunk[1]
            h = F.linear(h, linear.weight, linear.bias)
            h = F.relu(F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight,
                                    norm.bias, False, 0.0, norm.eps))
        emb = F.linear(h, self.embed.weight, self.embed.bias) if self.embed is not None else None
        return torch.tanh(F.linear(h, self.hash.weight, self.hash.bias)), emb


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """sign(x) in the forward pass, identity gradient in the backward pass (straight-through)."""
    hard = torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))
    return x + (hard - x).detach()


@torch.no_grad()
def head_outputs(head: HashHead, features: torch.Tensor) -> Encoded:
    """A head's packed codes and unit-length float embeddings (the embed layer's, else tanh),
    the whole batch at once: for training and scoring loops. A row's last float bits can
    depend on the batch's size here (see :func:`item_outputs`, which the encode calls use)."""
    tanh, emb = head(features)
    float_emb = emb if emb is not None else tanh
    float_emb = torch.nn.functional.normalize(float_emb, dim=1)
    return Encoded(pack_signs(tanh.cpu().numpy()), float_emb.cpu().numpy().astype(np.float32))


@torch.no_grad()
def item_outputs(head: HashHead, features: torch.Tensor,
                 prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Encoded:
    """Each row through ``prepare`` and the head alone: what :func:`head_outputs` gives,
    with each row's codes and embedding a function of that row only.

    A batched matrix product picks its kernel by the number of rows (torch's CPU Linear
    gave other last float bits at 40 rows than at 1, enough to flip a sign near zero), so
    every row takes the same one-row path whatever else is in the batch.

    Args:
        head: the hash head.
        features: (n, d) head inputs, or what ``prepare`` turns into them.
        prepare: a row's (1, d) features -> its (1, in_dim) head input (image class
            semantics); None for none.

    Returns:
        :class:`Encoded` with (n, bits // 8) codes and (n, d) float32 embeddings.
    """
    if head.training:
        raise ValueError("item_outputs needs a head in eval mode")
    tanh_rows, emb_rows = [], []
    for row in features.split(1):
        tanh, emb = head.forward_row(prepare(row) if prepare is not None else row)
        tanh_rows.append(tanh)
        emb_rows.append(F.normalize(emb if emb is not None else tanh, dim=1))
    if not tanh_rows:
        width = head.embed.out_features if head.embed is not None else head.hash.out_features
        return Encoded(np.zeros((0, head.hash.out_features // 8), np.uint8),
                       np.zeros((0, width), np.float32))
    return Encoded(pack_signs(torch.cat(tanh_rows).cpu().numpy()),
                   torch.cat(emb_rows).cpu().numpy().astype(np.float32))
