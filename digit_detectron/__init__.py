"""digit_detectron: a detectron2 plugin that detects house-number digits and reads the number.

Importing the package registers its modules in detectron2's registries and the datasets
``digits_train`` / ``digits_valid`` / ``digits_test`` under ``$DIGITS_DATASET_ROOT``.
"""
from .config import add_digit_config, apply_test_mode, get_digit_cfg
from . import modeling  # only registration
from .data import register_digits
from .data.datasets import default_dataset_root

register_digits(default_dataset_root())
