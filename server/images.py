"""Image bytes in: size and pixel limits checked before decoding, RGB decode, thumbnails."""

from __future__ import annotations

import io
import warnings

from PIL import Image

from crossbit.server.errors import LimitError

Image.MAX_IMAGE_PIXELS = None  # our own limit below is checked first, with a clear message


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode image bytes to RGB, refusing oversized input before decoding any pixels.

    Raises:
        LimitError: bytes or pixels over the limits (decompression bombs included).
        ValueError: empty, truncated or non-image bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"image must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise LimitError(f"image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(data)))
            width, height = image.size  # from the header only
            if width * height > max_pixels:
                raise LimitError(f"image is {width}x{height} = {width * height} pixels; "
                                 f"the limit is {max_pixels}")
            if width < 1 or height < 1:
                raise ValueError(f"image has no pixels ({width}x{height})")
            image.load()
            return image.convert("RGB")
    except LimitError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            ValueError, EOFError) as exc:
        raise ValueError(f"not a readable image ({exc})") from None


def make_thumbnail(image: Image.Image, size: int = 160, quality: int = 80) -> bytes:
    """A JPEG whose longest side is ``size`` pixels (never upscaled)."""
    thumb = image.copy()
    thumb.thumbnail((size, size))
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()
