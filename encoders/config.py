"""Model configuration: a dataclass saved as JSON beside the weights, so a checkpoint rebuilds itself."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from crossbit.encoders.codes import validate_bits

IMAGE_RUNTIMES = ("auto", "onnx", "torch")  # image backbone: auto = ONNX Runtime on the CPU
TEXT_RUNTIMES = ("auto", "onnx", "int8", "torch")  # text encoder: auto = ONNX int8 on the CPU


@dataclass
class ModelConfig:
    """Everything needed to rebuild a hash model (not the weights)."""

    bits: int = 64  # code length: 16, 32, 64, 128 or 256
    image_backbone: str = "efficientnet-lite0"  # a name from list_backbones()
    image_weights: str | None = None  # local backbone weights file; None = packaged/cached
    text_model: str = "minilm-l6"  # a name from list_text_models() or a local HF directory
    image_feature_dim: int = 1280  # backbone output size (set from the backbone)
    text_feature_dim: int = 384  # text model output size (set from the text model)
    hidden: int = 1024  # hidden width of the MLP hash heads; 0 = a single dense layer
    dropout: float = 0.1  # dropout in the heads while training
    embed_dim: int = 0  # extra float embedding for re-ranking; 0 = re-rank on the tanh outputs
    semantics: bool = True  # add ImageNet class semantics (in the text space) to image features
    extra: dict = field(default_factory=dict)  # free-form notes (training data, metrics)

    def __post_init__(self) -> None:
        validate_bits(self.bits)
        if self.hidden < 0 or self.embed_dim < 0:
            raise ValueError("hidden and embed_dim must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown}")
        return cls(**data)
