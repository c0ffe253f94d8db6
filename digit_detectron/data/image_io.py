"""Image reading that handles every mode a photo folder holds, with errors that name the file."""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils.errors import DigitError
from ..utils.pixels import pil_to_rgb


class ImageReadError(DigitError, OSError):
    """An image file cannot be decoded; the message names the file and the problem, ``kind`` which one."""

    def __init__(self, message, kind="corrupt"):
        super().__init__(message)
        self.kind = kind


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
            f"(set {MAX_PIXELS_ENV} to read larger images)",
            kind="too-large",
        )


def open_image(path, decode=True):
    """
    The one way this package opens an image file: the PIL image of ``path`` (the caller closes it, e.g.
    ``with open_image(p) as img``), its size checked against the pixel limit from the header and, with
    ``decode``, decoded whole (truncated files fail here). Any failure is an ImageReadError naming the file,
    whose ``kind`` says which: "empty", "missing", "not-image", "too-large" or "corrupt".
    """
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError(f"{path}: empty (zero-byte) file", kind="empty")
        img = Image.open(path)
        try:
            check_pixel_limit(path, img.size)  # from the header, before decoding
            # Read here, inside the error handling: a PNG's EXIF may sit after its pixels (PIL decodes to reach it).
            img.digits_orientation = img.getexif().get(EXIF_ORIENTATION, 1)
            if decode:
                img.load()
        except BaseException:
            img.close()
            raise
        return img
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found", kind="missing") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (or an unsupported format)", kind="not-image") from None
    except Image.DecompressionBombError as e:  # PIL's own limit, when it is below ours
        raise ImageReadError(f"{path}: too many pixels ({e})", kind="too-large") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({e})", kind="corrupt") from None


def oriented_size(img):
    """(width, height) of an opened image as read after its EXIF rotation (from the header)."""
    width, height = img.size
    if exif_orientation(img) in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return width, height


def exif_orientation(img):
    """The EXIF orientation tag of an image that ``open_image`` opened (1 when it has none)."""
    return img.digits_orientation


def read_image(path, format="BGR"):
    """
    Read ``path`` as an HxWx3 uint8 array in ``format`` ("BGR" or "RGB"), applying the EXIF
    orientation and converting grayscale, palette, RGBA/LA and 16-bit images correctly
    (``utils.pixels.pil_to_rgb``, which a PIL image given to ``DigitReader`` goes through too).
    """
    if format not in ("RGB", "BGR"):
        raise ValueError(f"format must be 'RGB' or 'BGR', got {format!r}")
    with open_image(path) as img:
        try:
            rgb = pil_to_rgb(img)
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageReadError(f"{path}: corrupt or truncated image ({e})", kind="corrupt") from None
    return rgb if format == "RGB" else np.ascontiguousarray(rgb[:, :, ::-1])
