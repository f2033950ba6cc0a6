"""Training objectives: VSE++ triplet ranking, InfoNCE, distillation, quantization, bit balance, DCMH."""

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


def multi_info_nce(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor,
                   temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE when each image brings several captions to the batch.

    Text -> image: each caption against every batch image. Image -> text: each (image,
    own caption) pair against the captions of the other images only (the image's other
    captions are neither positives nor negatives for that pair). With one caption per
    image in order (``owner == arange``) this is :func:`info_nce`.

    Args:
        images: (B, d) image outputs.
        texts: (M, d) text outputs.
        owner: (M,) index in ``images`` of each text's image.
    """
    logits = F.normalize(texts, dim=1) @ F.normalize(images, dim=1).t() / temperature  # (M, B)
    text_to_image = F.cross_entropy(logits, owner)
    own = owner[None, :] == torch.arange(len(images), device=images.device)[:, None]  # (B, M)
    negatives = torch.logsumexp(logits.t().masked_fill(own, float("-inf")), dim=1)  # (B,)
    positive = logits[torch.arange(len(owner), device=owner.device), owner]  # (M,)
    image_to_text = (torch.logaddexp(positive, negatives[owner]) - positive).mean()
    return 0.5 * (text_to_image + image_to_text)


def similarity_distillation(images: torch.Tensor, texts: torch.Tensor, teacher_images: torch.Tensor,
                            teacher_texts: torch.Tensor, temperature: float = 0.1,
                            teacher_temperature: float = 0.1) -> torch.Tensor:
    """KL divergence from a teacher's in-batch similarity distributions to the student's.

    Both are softmaxes of cosine similarities over the batch, text -> images and image ->
    texts; the teacher (float embeddings of a wider model) is a constant. Teaches the codes
    how much alike the non-matching pairs are, which one positive per row cannot.
    """
    def log_softmaxes(img, txt, temp):
        sims = F.normalize(txt, dim=1) @ F.normalize(img, dim=1).t() / temp
        return F.log_softmax(sims, dim=1), F.log_softmax(sims.t(), dim=1)

    student = log_softmaxes(images, texts, temperature)
    with torch.no_grad():
        teacher = log_softmaxes(teacher_images, teacher_texts, teacher_temperature)
    return 0.5 * sum(F.kl_div(s, t, log_target=True, reduction="batchmean")
                     for s, t in zip(student, teacher))


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
