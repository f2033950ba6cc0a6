"""What the encode calls take, without torch: checked lists of texts and images, images as backbone input."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from crossbit.encoders.codes import Encoded

ImageInput = Image.Image | bytes | str | os.PathLike


def load_image(item: ImageInput) -> Image.Image:
    """A PIL image, image bytes or a path -> an RGB PIL image.

    Raises:
        ValueError: for bytes or files that are not a readable image.
        FileNotFoundError: for a path that does not exist.
    """
    if isinstance(item, Image.Image):  # convert() copies even an RGB image: only when needed
        return item if item.mode == "RGB" else item.convert("RGB")
    if isinstance(item, (bytes, bytearray, memoryview)):
        source, name = io.BytesIO(bytes(item)), "image bytes"
    elif isinstance(item, (str, os.PathLike)):
        if not os.path.exists(item):
            raise FileNotFoundError(f"image file not found: {item}")
        source, name = item, str(item)
    else:
        raise TypeError(f"expected a PIL image, bytes or a path, got {type(item).__name__}")
    try:
        with Image.open(source) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"{name}: not a readable image ({exc})") from None


def image_array(images: Sequence[Image.Image], size: int, mean: Sequence[float],
                std: Sequence[float], flip: bool = False) -> np.ndarray:
    """Decoded images -> the backbone's normalised (n, 3, size, size) float32 input.

    The same float32 arithmetic, in the same order, as ``backbones.preprocess`` in torch
    (resize without keeping the aspect ratio, /255, minus mean, over std: each an IEEE
    float32 operation rounded once), so the numbers are the same to the bit
    (tests/test_light.py checks it).

    Args:
        images: decoded images (converted to RGB where they are not).
        size: the side the images are resized to (bilinear).
        mean: per-channel mean of the normalisation.
        std: per-channel standard deviation.
        flip: of the horizontally flipped images.

    Returns:
        (n, 3, size, size) float32 array.
    """
    arrays = []
    for image in images:
        if image.mode != "RGB":
            image = image.convert("RGB")
        image = image.resize((size, size), Image.BILINEAR)
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        arrays.append(np.asarray(image, dtype=np.float32))
    batch = np.stack(arrays).transpose(0, 3, 1, 2) / np.float32(255.0)
    mean32 = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std32 = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (batch - mean32) / std32


def text_list(texts: Sequence[str]) -> list[str]:
    """The texts of an encode call as a list.

    Raises:
        TypeError: for a bare string or non-string items.
    """
    if isinstance(texts, str):
        raise TypeError("encode_texts takes a list of strings; wrap a single text in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    return texts


def image_list(images: Iterable[ImageInput]) -> list:
    """The images of an encode call as a list.

    Raises:
        TypeError: for a bare image, bytes or path.
    """
    if isinstance(images, (str, bytes, Image.Image, os.PathLike)):
        raise TypeError("encode_images takes a list of images; wrap a single image in a list")
    return list(images)


def empty(bits: int, dim: int) -> Encoded:
    """No codes, no embeddings: what encoding nothing gives."""
    return Encoded(np.zeros((0, bits // 8), np.uint8), np.zeros((0, dim), np.float32))


def concat(parts: list[Encoded]) -> Encoded:
    """The codes and embeddings of several batches, in order."""
    return Encoded(np.concatenate([p.codes for p in parts]),
                   np.concatenate([p.embeddings for p in parts]))
