"""
Model bundles: a checkpoint that carries the full config it was trained with (and, once
tools/tune_reader.py has measured them, the reader's thresholds), so that a ``.pth`` alone is a model.

A bundle is a detectron2 checkpoint (``{"model": state_dict, ...}``) with one more key,
``"digit_detectron"``: ``{"format": 1, "config": <the config as YAML>}``. detectron2 ignores the
key, so a bundle loads wherever a checkpoint does; a plain detectron2 checkpoint still loads with a
config file. ``DigitCheckpointer(config=cfg)`` writes bundles (the trainer's does: model_final.pth,
model_best.pth and the periodic ones).
"""

import os
import pickle

import torch
import yaml

from ..utils.errors import DigitError
from ..utils.io import atomic_open

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_KEY",
    "BundleError",
    "READY_MODEL",
    "READY_MODEL_ONNX",
    "WEIGHTS_DIR",
    "ready_model",
    "bundle_entry",
    "pickle_trusted",
    "safe_torch_load",
    "read_bundle_config",
    "update_bundle_config",
    "write_bundle",
    "write_slim_bundle",
]

BUNDLE_KEY = "digit_detectron"
BUNDLE_FORMAT = 1


class BundleError(DigitError, ValueError):
    """A model file is not a checkpoint this project can read, or its embedded config is unusable."""


# The ready model shipped in the package (``make model`` trains it; docs/model_card.md): what
# ``DigitReader()`` and ``digit-detectron read`` use when no model is named.
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
READY_MODEL = os.path.join(WEIGHTS_DIR, "digits_ready.pth")
READY_MODEL_ONNX = os.path.join(WEIGHTS_DIR, "digits_ready.onnx")


def ready_model(exported=False):
    """The path of the shipped ready model (its ONNX export with ``exported``); BundleError when absent."""
    path = READY_MODEL_ONNX if exported else READY_MODEL
    if not os.path.isfile(path):
        raise BundleError(
            f"{path}: this installation ships no ready model; pass a model (a bundle written by training, "
            f"e.g. output/demo/train/model_best.pth), or train the ready model with `make model`"
        )
    return path


def bundle_entry(cfg):
    """What a bundle stores beside the weights for ``cfg``."""
    return {"format": BUNDLE_FORMAT, "config": cfg.dump()}


TRUST_PICKLE_ENV = "DIGITS_TRUST_PICKLE"


def pickle_trusted():
    """Whether ``$DIGITS_TRUST_PICKLE`` is 1: model files may then hold any pickled Python object."""
    return os.environ.get(TRUST_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def safe_torch_load(path, mmap=False):
    """
    ``torch.load`` of a model file with ``weights_only=True``: tensors and plain values only, so a file
    cannot run code when it is read. A file that holds other Python objects (an old checkpoint with
    pickled objects, or a crafted one) is a BundleError naming it, unless ``$DIGITS_TRUST_PICKLE=1``
    says the file is trusted. A file that is not a torch file at all is a BundleError too.
    """
    trusted = pickle_trusted()
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted, mmap=mmap or None)
    except pickle.UnpicklingError as e:
        if not trusted and "Unsupported global" in str(e):  # a pickled Python object, not a damaged file
            raise BundleError(
                f"{path}: holds pickled Python objects beyond tensors and plain values, which could run code "
                f"when loaded; refused. If you trust the file, set {TRUST_PICKLE_ENV}=1 to load it"
            ) from None
        raise BundleError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_one_line(e)})") from None
    except Exception as e:  # zip and torch errors alike: the file is not a torch checkpoint
        raise BundleError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_one_line(e)})") from None


def _one_line(error):
    return " ".join(str(error).split())[:200]


def _load(path, mmap=False):
    """The checkpoint dict (``safe_torch_load``); ``mmap``: map the tensors instead of reading them (cheap when
    only the config is wanted; a file saved without the zip format is read in full)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: model file not found")
    data = None
    if mmap:
        try:
            data = safe_torch_load(path, mmap=True)
        except BundleError as e:
            if "refused" in str(e):
                raise
            data = None  # a legacy (non-zip) file, or not a checkpoint: the full read below says which
    if data is None:
        data = safe_torch_load(path)
    if not isinstance(data, dict) or not isinstance(data.get("model", data), dict):
        raise BundleError(f"{path}: not a model checkpoint (expected a dict with a 'model' state dict)")
    return data


def read_bundle_config(path):
    """
    The config YAML embedded in the checkpoint ``path``, or None for a plain checkpoint (detectron2,
    model zoo, or one written before bundles). A ``.pkl`` (model-zoo weights) is never a bundle.
    Raises BundleError for a file that is not a checkpoint or a bundle entry of another format.
    """
    if path.endswith(".pkl") or "://" in path:
        return None
    entry = _load(path, mmap=True).get(BUNDLE_KEY)  # the config only: the weights stay on disk
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("format") != BUNDLE_FORMAT or not isinstance(entry.get("config"), str):
        raise BundleError(
            f"{path}: its '{BUNDLE_KEY}' entry is not a bundle of format {BUNDLE_FORMAT} "
            f"(got {type(entry).__name__} with format {entry.get('format') if isinstance(entry, dict) else None!r})"
        )
    try:
        yaml.safe_load(entry["config"])
    except yaml.YAMLError as e:
        raise BundleError(f"{path}: the embedded config is not valid YAML ({' '.join(str(e).split())})") from None
    return entry["config"]


def update_bundle_config(path, updates):
    """
    Set config keys (``{"DIGITS.READER.NMS_THRESH": 0.3, ...}``) in the embedded config of the bundle
    ``path``, atomically (the file is whole before and after). Returns False, changing nothing, for a
    plain checkpoint.
    """
    data = _load(path)
    entry = data.get(BUNDLE_KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), str):
        return False
    config = yaml.safe_load(entry["config"])
    for key, value in updates.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    data[BUNDLE_KEY] = {**entry, "config": yaml.safe_dump(config, sort_keys=True)}
    with atomic_open(path, "wb") as f:
        torch.save(data, f)
    return True


def write_bundle(path, weights, cfg):
    """Write the checkpoint ``weights`` with ``cfg`` embedded to ``path`` (a bundle); returns ``path``."""
    data = _load(weights)
    if "model" not in data:
        data = {"model": data}
    data[BUNDLE_KEY] = bundle_entry(cfg)
    with atomic_open(path, "wb") as f:
        torch.save(data, f)
    return path


def write_slim_bundle(src, dst, half=True, entry=None):
    """
    The bundle ``src`` as a model to ship: its weights (float tensors in float16 when ``half``, which the
    model loads back into float32) and its config entry (or ``entry``, a ``bundle_entry`` of another
    config, e.g. with other test-time settings), without the optimizer, scheduler and iteration a
    training checkpoint carries. Returns ``dst``.
    """
    data = _load(src)
    if BUNDLE_KEY not in data:
        raise BundleError(f"{src}: not a bundle (no embedded config): make one with tools/make_bundle.py first")
    if entry is not None:
        data[BUNDLE_KEY] = entry
    weights = {
        k: (v.half() if half and torch.is_floating_point(v) else v).contiguous().clone()
        for k, v in data["model"].items()
    }
    with atomic_open(dst, "wb") as f:
        torch.save({"model": weights, BUNDLE_KEY: data[BUNDLE_KEY]}, f)
    return dst
