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

import torch
import yaml

from ..utils.errors import DigitError
from ..utils.io import atomic_open

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_KEY",
    "BundleError",
    "bundle_entry",
    "read_bundle_config",
    "update_bundle_config",
    "write_bundle",
]

BUNDLE_KEY = "digit_detectron"
BUNDLE_FORMAT = 1


class BundleError(DigitError, ValueError):
    """A model file is not a checkpoint this project can read, or its embedded config is unusable."""


def bundle_entry(cfg):
    """What a bundle stores beside the weights for ``cfg``."""
    return {"format": BUNDLE_FORMAT, "config": cfg.dump()}


def _load(path, mmap=False):
    """The checkpoint dict; ``mmap``: map the tensors instead of reading them (cheap when only the
    config is wanted; a file saved without the zip format is read in full)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: model file not found")
    data = None
    if mmap:
        try:
            data = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception:  # a legacy (non-zip) file, or not a checkpoint: the full read below says which
            data = None
    if data is None:
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # pickle, zip and torch errors alike: the file is not a torch checkpoint
            raise BundleError(
                f"{path}: not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
            ) from None
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
