"""Loading the digit datasets for detectron2: catalogs, image reading, the mapper and its augmentations."""

from .datasets import DatasetError, load_digits_json, load_digits_test, register_digits
from .image_io import ImageReadError, read_image
from .mapper import DigitDatasetMapper
from .transforms import build_digit_augmentation

__all__ = [
    "DatasetError",
    "load_digits_json",
    "load_digits_test",
    "register_digits",
    "ImageReadError",
    "read_image",
    "DigitDatasetMapper",
    "build_digit_augmentation",
]
