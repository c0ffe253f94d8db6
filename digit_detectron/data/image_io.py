"""Image reading that handles every mode a photo folder holds, with errors that name the file."""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils.errors import DigitError
from ..utils.pixels import pil_to_rgb


class ImageReadError(DigitError, OSError):
    """An image file cannot be decoded; the message names the file and the problem."""


# The EXIF orientation tag, and the orientations that rotate by 90 or 270 degrees (width and height swap).
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)

# The largest image read, in pixels (width x height), from the header before decoding: a larger one
# is an ImageReadError (a counted skip in prediction). SVHN's largest photo has ~0.6 million pixels.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
MAX_PIXELS_ENV = "DIGITS_MAX_IMAGE_PIXELS"


def max_image_pixels():
    """The pixel limit: ``$DIGITS_MAX_IMAGE_PIXELS`` if set, else DEFAULT_MAX_IMAGE_PIXELS."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        limit = int(value) if value else DEFAULT_MAX_IMAGE_PIXELS
    except ValueError:
        raise ImageReadError(f"{MAX_PIXELS_ENV}={value!r}: not a whole number of pixels") from None
    if limit < 1:
        raise ImageReadError(f"{MAX_PIXELS_ENV}={value!r}: must be at least 1")
    return limit


def check_pixel_limit(path, size):
    """An ImageReadError naming ``path`` when ``size`` (width, height) has more pixels than the limit."""
    width, height = size
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageReadError(
            f"{path}: {width}x{height} = {width * height:,} pixels, more than the limit of {limit:,} "
            f"(set {MAX_PIXELS_ENV} to read larger images)"
        )


def read_image(path, format="BGR"):
    """
    Read ``path`` as an HxWx3 uint8 array in ``format`` ("BGR" or "RGB"), applying the EXIF
    orientation and converting grayscale, palette, RGBA/LA and 16-bit images correctly
    (``utils.pixels.pil_to_rgb``, which a PIL image given to ``DigitReader`` goes through too).
    """
    try:
        with open(path, "rb") as f:
            if not f.read(1):
                raise ImageReadError(f"{path}: empty (zero-byte) file")
        with Image.open(path) as img:
            check_pixel_limit(path, img.size)  # from the header, before decoding
            img.load()  # decodes the whole file: truncated files fail here
            rgb = pil_to_rgb(img)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (or an unsupported format)") from None
    except Image.DecompressionBombError as e:  # PIL's own limit, when it is below ours
        raise ImageReadError(f"{path}: too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({e})") from None
    if format not in ("RGB", "BGR"):
        raise ValueError(f"format must be 'RGB' or 'BGR', got {format!r}")
    return rgb if format == "RGB" else np.ascontiguousarray(rgb[:, :, ::-1])
