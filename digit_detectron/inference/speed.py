"""
The inference speed options (``DIGITS.INFERENCE``), applied to a model in eval mode by ``DigitPredictor``
and ``train_net.py --eval-only``; the mechanisms are in ``modeling/speed.py``, bf16 training in
``engine/trainer.py`` (``apply_training_options``).
"""

import logging

from ..modeling.speed import bf16_backbone, set_pooler_sampling_ratio, use_backbone_bf16

__all__ = ["apply_inference_options"]

_logger = logging.getLogger("digit_detectron")


def apply_inference_options(model, cfg):
    """Apply cfg.DIGITS.INFERENCE to an eval-mode model; returns the options in effect (a dict, logged)."""
    device = cfg.MODEL.DEVICE
    options = {"backbone_bf16": use_backbone_bf16(cfg.DIGITS.INFERENCE.BACKBONE_BF16, device)}
    if options["backbone_bf16"] and not getattr(model.backbone, "runs_bf16", False):
        bf16_backbone(model.backbone, "cuda" if str(device).startswith("cuda") else "cpu")
    ratio = cfg.DIGITS.INFERENCE.POOLER_SAMPLING_RATIO
    if ratio > 0:
        options["pooler_sampling_ratio"] = set_pooler_sampling_ratio(model, ratio)
    if cfg.DIGITS.INFERENCE.BACKBONE_BF16 != "off" or ratio > 0:
        setting = cfg.DIGITS.INFERENCE.BACKBONE_BF16
        _logger.info(f"inference options: {options} (DIGITS.INFERENCE.BACKBONE_BF16={setting})")
    return options
