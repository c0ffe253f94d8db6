from .datasets import DatasetError, load_digits_json, load_digits_test, register_digits
from .image_io import ImageReadError, read_image
from .mapper import DigitDatasetMapper
from .transforms import build_digit_augmentation
