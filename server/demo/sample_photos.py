"""Public-domain sample photos (scikit-image's) as JPEG bytes, for the demo and the load generator."""

from __future__ import annotations

import io

# scikit-image's bundled sample photos (public domain), with the caption a person would give
SAMPLES = {
    "astronaut": "an astronaut in a space suit with an american flag",
    "coffee": "a cup of coffee on a saucer",
    "chelsea": "a cat looking up",
    "rocket": "a rocket on a launch pad",
    "hubble_deep_field": "galaxies in deep space",
    "immunohistochemistry": "a microscope image of stained cells",
    "retina": "a photograph of an eye retina",
    "colorwheel": "a color wheel",
    "camera": "a man with a camera on a tripod",
    "coins": "old coins on a table",
    "moon": "the surface of the moon",
    "page": "a page of printed text",
    "horse": "the silhouette of a horse",
}


def sample_photos() -> dict[str, bytes]:
    """JPEG bytes of the sample photos that load without a download.

    Raises:
        ValueError: scikit-image is not installed (the serving install without torch).
    """
    import numpy as np
    from PIL import Image

    try:
        import skimage.data
    except ImportError:
        raise ValueError("the sample photos are scikit-image's, which this install does not "
                         "have: pip install scikit-image (the full install has it)") from None

    out = {}
    for name in SAMPLES:
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # a sample that needs a download: skip it
            continue
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        image = Image.fromarray(array).convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out[name] = buf.getvalue()
    return out
