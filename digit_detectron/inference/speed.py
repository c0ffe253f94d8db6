"""
Speed options: the inference ones (``DIGITS.INFERENCE``), applied to a model in eval mode by
``DigitPredictor`` and ``train_net.py --eval-only``, and bf16 training (``DIGITS.TRAIN_BF16``),
applied by the trainer and ``tools/benchmark.py --task train``. Each leaves the boxes within the tolerance
``tests/test_speed_options.py`` states; benchmarks/speed.md measures what each buys.
"""

import logging

import torch

__all__ = [
    "apply_inference_options",
    "apply_training_options",
    "bf16_backbone",
    "cpu_has_native_bf16",
    "set_pooler_sampling_ratio",
    "use_backbone_bf16",
]

_logger = logging.getLogger("digit_detectron")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU computes bfloat16 natively (avx512_bf16 or amx_bf16 among its flags)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in _BF16_FLAGS)
    except OSError:
        pass
    return False


def use_backbone_bf16(setting, device="cpu", cpuinfo="/proc/cpuinfo"):
    """DIGITS.INFERENCE.BACKBONE_BF16 ("off", "on", "auto") for ``device``: "auto" is on for a CPU with native bf16."""
    if setting == "on":
        return True
    if setting == "auto":
        return str(device).startswith("cpu") and cpu_has_native_bf16(cpuinfo)
    return False


def bf16_backbone(backbone, device_type="cpu"):
    """
    Make ``backbone`` run under bfloat16 autocast and hand float32 features to the heads (box
    decoding, scores and NMS stay float32). Changes the instance's ``forward`` only: same weights,
    same state dict.
    """
    forward = backbone.forward

    def forward_bf16(x):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            features = forward(x)
        return {name: f.float() for name, f in features.items()}

    backbone.forward = forward_bf16
    backbone.runs_bf16 = True
    return backbone


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


def apply_training_options(model, cfg):
    """
    Apply DIGITS.TRAIN_BF16 to a model about to be trained: the backbone under bfloat16 autocast
    (``bf16_backbone``; gradients flow through it), on where "on", or "auto" on a CPU with native
    bf16. Returns the options in effect (a dict, logged).
    """
    device = cfg.MODEL.DEVICE
    options = {"train_bf16": use_backbone_bf16(cfg.DIGITS.TRAIN_BF16, device)}
    if options["train_bf16"] and not getattr(model.backbone, "runs_bf16", False):
        bf16_backbone(model.backbone, "cuda" if str(device).startswith("cuda") else "cpu")
    if cfg.DIGITS.TRAIN_BF16 != "off":
        _logger.info(f"training options: {options} (DIGITS.TRAIN_BF16={cfg.DIGITS.TRAIN_BF16})")
    return options


def set_pooler_sampling_ratio(model, ratio):
    """Set the sampling ratio of every ROIAlign level of the ROI heads' poolers; returns ``ratio``."""
    for name in ("box_pooler", "mask_pooler", "keypoint_pooler"):
        pooler = getattr(model.roi_heads, name, None)
        for level in getattr(pooler, "level_poolers", []):
            if hasattr(level, "sampling_ratio"):
                level.sampling_ratio = int(ratio)
    return int(ratio)
