"""digit_detectron: a detectron2 plugin that detects house-number digits and reads the number.

Importing the package registers its modules in detectron2's registries and the datasets
``digits_train`` / ``digits_valid`` / ``digits_test`` under ``$DIGITS_DATASET_ROOT``.

Layers, in the order data flows: ``data`` (datasets, mapper, synthetic generator, offline preparation)
-> ``modeling`` (ROI heads, IoU loss, backbones) -> ``engine`` (trainer, hooks, schedule, pre-training)
-> ``checkpoint`` (loading, saving, weight conversion) -> ``evaluation`` -> ``inference`` (predictor,
number reader, submission files) -> ``analysis`` (anchors, benchmarks, experiments, plots, drawings).
"""

from . import modeling  # only registration
from .config import add_digit_config, apply_test_mode, get_digit_cfg
from .data import register_digits
from .data.datasets import default_dataset_root

register_digits(default_dataset_root())

__all__ = [
    "add_digit_config",
    "apply_test_mode",
    "default_dataset_root",
    "get_digit_cfg",
    "modeling",
    "register_digits",
]
