"""Training objectives: triplet ranking (VSE++ max violation), InfoNCE, quantization, bit balance, DCMH."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def triplet_max_violation(images: torch.Tensor, texts: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """The seeds' modified triplet ranking loss, summed over both directions.

    Row i of ``images`` and ``texts`` is a matching pair; every other row in the
    batch is a negative. For each positive pair only the hardest negative counts
    (VSE++'s max violation), once with the image as anchor and once with the text.

    Returns:
        the mean over the batch of the two hinge terms' sum.
    """
    # 1. cosine similarities of every image with every text; the diagonal holds the positives
    sims = F.normalize(images, dim=1) @ F.normalize(texts, dim=1).t()
    positives = sims.diag().view(-1, 1)
    # 2. hinge for image anchors (rows) and text anchors (columns)
    cost_texts = (margin + sims - positives).clamp(min=0)
    cost_images = (margin + sims - positives.t()).clamp(min=0)
    # 3. a pair is not its own negative
    eye = torch.eye(len(sims), dtype=torch.bool, device=sims.device)
    cost_texts = cost_texts.masked_fill(eye, 0)
    cost_images = cost_images.masked_fill(eye, 0)
    # 4. keep only the hardest negative of each anchor
    return (cost_texts.max(dim=1).values + cost_images.max(dim=0).values).mean()


def info_nce(images: torch.Tensor, texts: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE over cosine similarities (row i of each is a matching pair)."""
    logits = F.normalize(images, dim=1) @ F.normalize(texts, dim=1).t() / temperature
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def quantization_loss(h: torch.Tensor) -> torch.Tensor:
    """Mean squared gap between tanh outputs and their signs."""
    return (h - torch.sign(h).detach()).pow(2).mean()


def bit_balance_loss(h: torch.Tensor) -> torch.Tensor:
    """Pushes each bit to be +1 for half the items: the squared batch mean of each bit."""
    return h.mean(dim=0).pow(2).mean()


def dcmh_nll(image_h: torch.Tensor, text_h: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """DCMH's negative log-likelihood of the label-similarity matrix.

    With theta_ij = <f_i, g_j> / 2, the likelihood of S_ij = 1 is sigmoid(theta_ij);
    the loss is mean(log(1 + exp(theta)) - S * theta).

    Args:
        image_h: (n, bits) image outputs.
        text_h: (m, bits) text outputs.
        similarity: (n, m) 0/1 matrix, 1 where image i and text j share a label.
    """
    theta = 0.5 * image_h @ text_h.t()
    return (F.softplus(theta) - similarity * theta).mean()
