"""
One conversion from a decoded PIL image to the RGB pixels the models read, for every input route:
a file (``data.image_io.read_image``), a PIL image given to ``DigitReader``, and the exported runtime
(``export/runtime.py`` inlines this file on export, so it imports nothing but numpy and Pillow).

The EXIF orientation is applied; 16-bit (and 32-bit int) grayscale is scaled to 8 bits instead of
clipped; transparent pixels are composited onto white, as viewers show them.
"""

import numpy as np
from PIL import Image, ImageOps


def pil_to_rgb(img):
    """An H x W x 3 uint8 RGB array of the (already decoded) PIL image ``img``."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L").convert("RGB")
    elif img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    else:
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
