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

import warnings

from .utils.threads import prepare_openmp

prepare_openmp()  # before anything below imports torch
# detectron2 decorates functions with torch.jit.script at import, which torch >= 2.10 reports as
# deprecated on every run: a warning about detectron2's code, not the user's, so not shown.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

# detectron2 has no PyPI wheel: ``digit-detectron setup-detectron2`` installs it. Without it the package
# still imports (so that command can run), and each name below raises an ImportError that says so.
DETECTRON2_MISSING = (
    "detectron2 is not installed in this Python environment: run `digit-detectron setup-detectron2` "
    "(or `python -m digit_detectron.tools.setup_detectron2`) to install it"
)
try:
    import detectron2  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != "detectron2":
        raise
    HAS_DETECTRON2 = False
else:
    HAS_DETECTRON2 = True
    from . import modeling  # only registration
    from .config import add_digit_config, apply_test_mode, get_digit_cfg
    from .data import register_digits
    from .data.datasets import default_dataset_root
    from .inference.reader_api import Digit, DigitReader, ReadResult

    register_digits(default_dataset_root())


def __getattr__(name):
    if not HAS_DETECTRON2 and name in __all__:
        raise ImportError(f"digit_detectron.{name}: {DETECTRON2_MISSING}")
    raise AttributeError(f"module 'digit_detectron' has no attribute {name!r}")


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
