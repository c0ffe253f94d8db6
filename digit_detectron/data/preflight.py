"""
Checks run before the first training iteration (and before an evaluation), so that bad input fails in
seconds, naming the file, instead of when a sample is first drawn: every listed dataset's json parses,
every image exists, and its size as the header tells it (after EXIF rotation) matches the json and
the pixel limit. Images are not decoded here (tools/check_dataset.py does that).
"""

import logging
import os
import time

from .datasets import get_dataset_dicts
from .image_io import ImageReadError, open_image, oriented_size

logger = logging.getLogger(__name__)


def header_size(path):
    """(width, height) of an image as read after EXIF rotation, from its header; ImageReadError otherwise."""
    with open_image(path, decode=False) as img:
        return oriented_size(img)


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
