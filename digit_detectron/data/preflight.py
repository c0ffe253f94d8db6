"""
Checks run before the first training iteration (and before an evaluation), so that bad input fails in
seconds, naming the file, instead of when a sample is first drawn: every listed dataset's json parses,
every image exists, and its size as the header tells it (after EXIF rotation) matches the json and
the pixel limit. Images are not decoded here (tools/check_dataset.py does that).
"""

import logging
import os
import time

from PIL import Image, UnidentifiedImageError

from .datasets import get_dataset_dicts
from .image_io import EXIF_ORIENTATION, TRANSPOSING_ORIENTATIONS, ImageReadError, check_pixel_limit

logger = logging.getLogger(__name__)


def header_size(path):
    """(width, height) of an image as read after EXIF rotation, from its header; ImageReadError otherwise."""
    try:
        with Image.open(path) as img:
            check_pixel_limit(path, img.size)
            width, height = img.size
            if img.getexif().get(EXIF_ORIENTATION, 1) in TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except ImageReadError:  # over the pixel limit
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (or an unsupported format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({e})") from None
    return width, height


def preflight(dataset_names):
    """Load each registered dataset and check its images' headers; the first problem is raised, naming the file."""
    start, checked = time.perf_counter(), 0
    for name in dict.fromkeys(dataset_names):
        for record in get_dataset_dicts(name):
            path = record["file_name"]
            if not os.path.isfile(path):
                raise ImageReadError(f"{path}: file not found (listed in dataset {name})")
            width, height = header_size(path)
            if "width" in record and (width, height) != (record["width"], record["height"]):
                raise ImageReadError(
                    f"{path}: image is {width}x{height} (width x height, after EXIF rotation) but its "
                    f"annotation says {record['width']}x{record['height']}; fix the json's width/height "
                    "(tools/check_dataset.py lists every such image)"
                )
            checked += 1
    logger.info(
        f"Pre-flight: {checked} images of {', '.join(dict.fromkeys(dataset_names))} checked in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return checked
