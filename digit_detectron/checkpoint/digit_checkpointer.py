"""DigitCheckpointer: detectron2's checkpointer with explicit output-layer re-initialisation and atomic saves."""

import logging
import os
import re
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from ..utils.errors import DigitError
from ..utils.io import atomic_open
from .bundle import BUNDLE_KEY, BundleError, bundle_entry, safe_torch_load

__all__ = ["CheckpointError", "DigitCheckpointer"]

logger = logging.getLogger(__name__)

# Output layers whose shapes follow the config (class count, anchors per location) -> the std of
# the normal init detectron2 gives them (FastRCNNOutputLayers, StandardRPNHead); biases start at 0.
_RESIZABLE_LAYERS = {"cls_score": 0.01, "bbox_pred": 0.001, "objectness_logits": 0.01, "anchor_deltas": 0.01}


class CheckpointError(DigitError, ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names the file and the problem."""


class DigitCheckpointer(DetectionCheckpointer):
    """
    DetectionCheckpointer (detectron2:// URLs, model-zoo .pkl, .pth) that

    1. re-initialises the class head (``box_predictor.cls_score`` / ``bbox_pred``) and the RPN outputs
       (``objectness_logits`` / ``anchor_deltas``) when the checkpoint has another class count or
       anchors per location, with one warning naming the tensors and shapes (detectron2 only skips
       them, leaving whatever the model held);
    2. raises :class:`CheckpointError` for any other shape mismatch (the checkpoint does not fit the
       config) and for an unreadable file, naming the file;
    3. with ``config``, saves bundles: the config rides along in the checkpoint (checkpoint/bundle.py);
    4. saves checkpoints and the ``last_checkpoint`` tag atomically (temporary file + os.replace), so a
       process killed while saving leaves the previous files whole for ``--resume``.

    Two loading modes: lenient (the default, for training and fine-tuning) as above, with missing
    tensors left as initialised; ``strict=True`` (inference and evaluation) raises CheckpointError for
    any missing, unexpected or re-initialisable tensor, naming the file and the first keys: a
    prediction never runs on a partly loaded model. In both modes a model-zoo ``.pkl`` tensor that
    detectron2's name matching finds but cannot load (another shape) is an error.
    """

    def __init__(self, model, save_dir="", *, strict=False, config=None, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.strict = strict
        self.config = config  # with a config, every save writes a bundle (checkpoint/bundle.py)

    def load(self, path, *args, **kwargs):
        if path:
            local = urlparse(path)._replace(query="").geturl()
            if "://" not in local and not os.path.isfile(local):
                raise FileNotFoundError(f"{local}: checkpoint not found")
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _torch_load(self, filename):
        """A ``.pth`` / ``.pt`` file: tensors and plain values only (``bundle.safe_torch_load``)."""
        try:
            return safe_torch_load(filename)
        except BundleError as e:
            raise CheckpointError(str(e)) from None

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{filename}: not a readable checkpoint ({type(e).__name__}: {e})") from e

    def _load_model(self, checkpoint):
        with _SkippedTensors() as skipped:
            incompatible = super()._load_model(checkpoint)
        if skipped.messages:
            raise CheckpointError(
                f"{self._loading}: {len(skipped.messages)} tensors matched by name do not fit the model: "
                + "; ".join(skipped.messages[:3])
            )
        if self.strict:
            self._check_complete(incompatible)
        resized = [s for s in incompatible.incorrect_shapes if _layer_kind(s[0]) in _RESIZABLE_LAYERS]
        mismatched = [s for s in incompatible.incorrect_shapes if s not in resized]
        if mismatched:
            raise CheckpointError(
                f"{self._loading}: {len(mismatched)} tensors do not fit the model built from this config "
                "(name: checkpoint shape vs model shape): " + _shapes_str(mismatched)
            )
        if not resized:
            return incompatible
        layers = sorted({key.rsplit(".", 1)[0] for key, _, _ in resized})
        with torch.no_grad():
            for name in layers:
                layer = self.model.get_submodule(name)
                nn.init.normal_(layer.weight, std=_RESIZABLE_LAYERS[name.rsplit(".", 1)[-1]])
                nn.init.constant_(layer.bias, 0)
        logger.warning(
            f"{self._loading}: {_resize_reason(resized)}: re-initialised "
            f"{', '.join(layers)} (name: checkpoint shape vs model shape): {_shapes_str(resized)}"
        )
        reinitialised = {f"{name}.{p}" for name in layers for p in ("weight", "bias")}
        return incompatible._replace(
            incorrect_shapes=[],
            missing_keys=[k for k in incompatible.missing_keys if k not in reinitialised],
        )

    def _check_complete(self, incompatible):
        """Strict mode: every model tensor loaded from the checkpoint and nothing left over."""
        problems = []
        for what, keys in (
            ("missing", incompatible.missing_keys),
            ("unexpected", incompatible.unexpected_keys),
            ("of another shape", [k for k, _, _ in incompatible.incorrect_shapes]),
        ):
            if keys:
                problems.append(f"{len(keys)} {what} (e.g. {', '.join(sorted(keys)[:3])})")
        if problems:
            raise CheckpointError(
                f"{self._loading}: does not fit the model of this config for inference: "
                + "; ".join(problems)
                + ". Pass the checkpoint trained with this config (or the config it was trained with)"
            )

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        if self.config is not None:
            data[BUNDLE_KEY] = bundle_entry(self.config)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_open(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)


def _layer_kind(key):
    """ "cls_score" for "roi_heads.box_predictor.cls_score.weight"."""
    parts = key.split(".")
    return parts[-2] if len(parts) > 1 else ""


def _shapes_str(shapes):
    return ", ".join(f"{key}: {tuple(ckpt)} vs {tuple(model)}" for key, ckpt, model in shapes)


def _resize_reason(resized):
    """Why the output layers differ, e.g. "the checkpoint has 80 classes, the model 10"."""
    shapes = {_layer_kind(key) + "." + key.rsplit(".", 1)[-1]: (c, m) for key, c, m in resized}
    reasons = []
    if "cls_score.weight" in shapes:
        ckpt, model = shapes["cls_score.weight"]
        reasons.append(f"the checkpoint has {ckpt[0] - 1} classes, the model {model[0] - 1}")
    if "objectness_logits.weight" in shapes:
        ckpt, model = shapes["objectness_logits.weight"]
        reasons.append(f"the checkpoint has {ckpt[0]} anchors per location, the model {model[0]}")
    return "; ".join(reasons) or "the checkpoint's output layers have other shapes"


class _SkippedTensors(logging.Handler):
    """Collects detectron2's "... will not be loaded" warnings of its name matching (.pkl checkpoints)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
        self._logger = logging.getLogger("detectron2.checkpoint.c2_model_loading")

    def emit(self, record):
        text = record.getMessage()
        match = re.match(r"Shape of .* while shape of (\S+) in model", text)
        if match and _layer_kind(match.group(1)) not in _RESIZABLE_LAYERS:  # output layers follow the config
            self.messages.append(text.rstrip("."))

    def __enter__(self):
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self._logger.removeHandler(self)
        return False
