"""digit_detectron: a detectron2 plugin that detects house-number digits and reads the number.

Importing the package registers its modules in detectron2's registries and the datasets
``digits_train`` / ``digits_valid`` / ``digits_test`` under ``$DIGITS_DATASET_ROOT``.

Layers, lowest first; each imports only those below it (``tools/check_layers.py``, run by ``make lint``):
``utils`` < ``data`` (datasets, mapper, image reading, synthetic generator, offline preparation) <
``modeling`` (ROI heads, IoU loss, backbones, bf16, the number reader) < ``checkpoint`` (loading,
saving, bundles, weight conversion) < ``config`` < ``evaluation`` (evaluators, the report, drawings) <
``engine`` (trainer, hooks, schedule, pre-training, plots) < ``export`` (TorchScript / ONNX, the
runtime) < ``inference`` (predictor, ``DigitReader``, reader tuning, submission files) < ``analysis``
(anchors, benchmarks, experiments, visualisation) < ``tools`` (the subcommands' logic). ``command.py``
and this file may import any layer.

Importing it also sets ``OMP_WAIT_POLICY=PASSIVE`` when neither that nor ``GOMP_SPINCOUNT`` is set
and torch is not imported yet (``utils/threads.py``; ``DIGITS_THREAD_POLICY=torch`` turns it off).
"""

from .utils.threads import prepare_openmp

prepare_openmp()  # before anything below imports torch

from . import modeling  # only registration
from .config import add_digit_config, apply_test_mode, get_digit_cfg
from .data import register_digits
from .data.datasets import default_dataset_root
from .inference.reader_api import Digit, DigitReader, ReadResult

register_digits(default_dataset_root())

__all__ = [
    "Digit",
    "DigitReader",
    "ReadResult",
    "add_digit_config",
    "apply_test_mode",
    "default_dataset_root",
    "get_digit_cfg",
    "modeling",
    "register_digits",
]
