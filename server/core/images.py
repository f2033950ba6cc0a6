"""Image bytes in: size and pixel limits checked before decoding, RGB decode, thumbnails."""

from __future__ import annotations

import contextlib
import io
import math
import re

from PIL import Image, UnidentifiedImageError

from crossbit.server.core.exceptions import LimitError
from crossbit.server.core.jpeg import read_frame
from crossbit.server.core.pixels import PixelBudget

Image.MAX_IMAGE_PIXELS = None  # our own limit below is checked first, with a clear message
# the formats read: each opens from its header alone, so its size is checked before any pixel is
# decoded (ICO and ICNS decode the embedded image inside Image.open: a 48 KB ICO held a
# 20000x20000 PNG; they, and every other format, are refused as unreadable)
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG opens MPO files too
Image.init()  # their plugins registered (Image.open with formats= looks each one up)

__all__ = ["PixelBudget", "decode_image", "image_pixels", "make_thumbnail"]


def _open(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """The image's header, checked: bytes and pixels within the limits, and for a JPEG a frame
    whose scans can hold its pixels. Nothing is decoded yet."""
    if len(data) == 0:
        raise ValueError("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise LimitError(f"image is {len(data)} bytes; the limit is {max_bytes}")
    image = Image.open(io.BytesIO(bytes(data)), formats=FORMATS)
    if getattr(image, "_im", None) is not None:  # a format that decodes while it opens: never past this point
        raise ValueError(f"{image.format} images are decoded before their size can be checked")
    width, height = image.size  # from the header only
    if width * height > max_pixels:
        raise LimitError(f"image is {width}x{height} = {width * height} pixels; "
                         f"the limit is {max_pixels}")
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    if image.format in ("JPEG", "MPO"):  # an MPO decodes its first JPEG
        frame = read_frame(data)
        if (frame.width, frame.height) != (width, height):
            raise ValueError(f"JPEG frame of {frame.width}x{frame.height} where the decoder "
                             f"reads {width}x{height}")
        missing = frame.missing()
        if missing:
            raise ValueError(f"JPEG of {len(data)} bytes cannot be decoded whole: {missing} "
                             "(its image data is missing or truncated)")
    return image


@contextlib.contextmanager
def _reading(data):
    """Every decoder failure as ValueError (the input's fault), limits as LimitError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"image must be bytes, got {type(data).__name__}")
    try:
        yield
    except LimitError:
        raise
    except UnidentifiedImageError:
        raise ValueError(f"not a readable image (no decoder knows these {len(data)} bytes: "
                         "JPEG, PNG, WebP, GIF, BMP and TIFF are)") from None
    except ValueError as exc:
        raise ValueError(f"not a readable image ({_plain(exc)})") from None
    except Exception as exc:  # any decoder failure (NotImplementedError for DDS...) is the input's
        raise ValueError(f"not a readable image ({type(exc).__name__}: {_plain(exc)})") from None


def image_pixels(data, max_bytes: int, max_pixels: int) -> int:
    """The pixels these bytes would decode to, read from the header; 0 when they would be
    refused before decoding (not an image, over a limit, a JPEG without its data)."""
    try:
        with _reading(data):
            width, height = _open(data, max_bytes, max_pixels).size
            return width * height
    except (ValueError, TypeError):  # LimitError is a ValueError
        return 0


def decode_image(data: bytes, max_bytes: int, max_pixels: int,
                 budget: PixelBudget | None = None) -> Image.Image:
    """Decode image bytes to RGB, refusing oversized or incomplete input before decoding pixels.

    Args:
        data: the encoded image.
        max_bytes, max_pixels: the limits of one image.
        budget: the request's pixels (and the server's pool): the decoded image holds its
            pixels of the pool until it is freed.

    Raises:
        LimitError: bytes or pixels over the limits (decompression bombs included), or over
            the request's pixel ``budget``.
        ValueError: empty, truncated or non-image bytes, a JPEG whose scans cannot hold its
            pixels, or a format the decoder cannot read.
    """
    with _reading(data):
        image = _open(data, max_bytes, max_pixels)
        pixels = image.size[0] * image.size[1]
        if budget is not None:
            budget.take(pixels)
        try:
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy
        except BaseException:
            if budget is not None:
                budget.give(pixels)
            raise
        if budget is not None:
            budget.hold(rgb, pixels)
        return rgb


def _plain(exc: BaseException) -> str:
    """The decoder's message without Python object reprs (``<_io.BytesIO object at 0x...>``)."""
    return re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "the image", str(exc))


def make_thumbnail(image: Image.Image, size: int = 160, quality: int = 80) -> bytes:
    """A JPEG whose longest side is ``size`` pixels (never upscaled): what
    ``image.copy().thumbnail((size, size))`` makes, without copying the whole image first."""
    final = thumbnail_size(image.size, size)
    thumb = image if final == image.size else \
        image.resize(final, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def thumbnail_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The size ``Image.thumbnail((side, side))`` gives an image of ``size`` (Pillow's rounding)."""
    width, height = size
    if side >= width and side >= height:
        return size
    aspect = width / height
    x, y = side, side
    if x / y >= aspect:
        x = _round_aspect(y * aspect, lambda n: abs(aspect - n / y))
    else:
        y = _round_aspect(x / aspect, lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


def _round_aspect(number: float, key) -> int:
    return max(min(math.floor(number), math.ceil(number), key=key), 1)
