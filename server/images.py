"""Image bytes in: size and pixel limits checked before decoding, RGB decode, thumbnails."""

from __future__ import annotations

import io
import re
import warnings

from PIL import Image, UnidentifiedImageError

from crossbit.server.exceptions import LimitError

Image.MAX_IMAGE_PIXELS = None  # our own limit below is checked first, with a clear message

# A Huffman-coded JPEG spends at least one bit on each 8x8 luma block's DC coefficient, so a
# whole one has at least one byte per 512 pixels. Fewer than one per 1,024 (half that floor)
# means the scans are missing, and libjpeg would fill the picture with grey.
JPEG_MIN_PIXELS_PER_BYTE = 1024


class PixelBudget:
    """The decoded pixels one request may cause, taken image by image."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self, pixels: int) -> None:
        if self.used + pixels > self.limit:
            raise LimitError(f"this image would take the request to {self.used + pixels} decoded "
                             f"pixels; the limit per request is {self.limit}: send fewer or "
                             "smaller images per call")
        self.used += pixels


def decode_image(data: bytes, max_bytes: int, max_pixels: int,
                 budget: PixelBudget | None = None) -> Image.Image:
    """Decode image bytes to RGB, refusing oversized or incomplete input before decoding pixels.

    Raises:
        LimitError: bytes or pixels over the limits (decompression bombs included), or over
            the request's pixel ``budget``.
        ValueError: empty, truncated or non-image bytes, or a format the decoder cannot read.
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
            if image.format == "JPEG" and not _arithmetic_jpeg(data) and \
                    width * height > JPEG_MIN_PIXELS_PER_BYTE * len(data):
                raise ValueError(f"JPEG of {len(data)} bytes cannot hold {width}x{height} pixels "
                                 "(its image data is missing or truncated)")
            if budget is not None:
                budget.take(width * height)
            image.load()
            return image.convert("RGB")
    except LimitError:
        raise
    except UnidentifiedImageError:
        raise ValueError(f"not a readable image (no decoder knows these {len(data)} bytes: "
                         "JPEG, PNG, WebP, GIF, BMP and TIFF are)") from None
    except ValueError as exc:
        raise ValueError(f"not a readable image ({_plain(exc)})") from None
    except Exception as exc:  # any decoder failure (NotImplementedError for DDS...) is the input's
        raise ValueError(f"not a readable image ({type(exc).__name__}: {_plain(exc)})") from None


def _plain(exc: BaseException) -> str:
    """The decoder's message without Python object reprs (``<_io.BytesIO object at 0x...>``)."""
    return re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "the image", str(exc))


def _arithmetic_jpeg(data: bytes) -> bool:
    """True for arithmetic-coded JPEGs (SOF9 to SOF15), which may spend under a bit per block."""
    head = bytes(data[:65536])
    return any(marker in head for marker in (b"\xff\xc9", b"\xff\xca", b"\xff\xcb",
                                             b"\xff\xcd", b"\xff\xce", b"\xff\xcf"))


def make_thumbnail(image: Image.Image, size: int = 160, quality: int = 80) -> bytes:
    """A JPEG whose longest side is ``size`` pixels (never upscaled)."""
    thumb = image.copy()
    thumb.thumbnail((size, size))
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()
