"""crossbit.encoders: what serving needs to turn images and texts into codes (training lives in .training).

The public names load lazily, so ``import crossbit.encoders.config`` stays free of torch.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "HashModel": "crossbit.encoders.model",
    "Encoded": "crossbit.encoders.model",
    "SHIPPED_MODELS": "crossbit.encoders.model",
    "ModelConfig": "crossbit.encoders.config",
    "IMAGE_RUNTIMES": "crossbit.encoders.config",
    "TEXT_RUNTIMES": "crossbit.encoders.config",
    "use_image_runtime": "crossbit.encoders.runtime",
    "use_text_runtime": "crossbit.encoders.runtime",
    "list_backbones": "crossbit.encoders.backbones",
    "list_text_models": "crossbit.encoders.text_models",
    "pack_signs": "crossbit.encoders.codes",
    "validate_bits": "crossbit.encoders.codes",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'crossbit.encoders' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
