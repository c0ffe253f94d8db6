"""
Model-level speed mechanisms that training and inference both apply: the backbone under bfloat16
autocast (``DIGITS.TRAIN_BF16``, ``DIGITS.INFERENCE.BACKBONE_BF16``) and the ROIAlign sampling ratio.
``DIGITS_BF16=off`` in the environment turns bf16 off everywhere, whatever the config says (to measure
as a CPU without native bf16 runs). Each leaves the boxes within the tolerance ``tests/test_speed_options.py``
states; benchmarks/speed.md measures what each buys.
"""

import os

import torch

__all__ = [
    "BF16_ENV",
    "bf16_backbone",
    "bf16_allowed",
    "cpu_has_native_bf16",
    "set_pooler_sampling_ratio",
    "use_backbone_bf16",
]

BF16_ENV = "DIGITS_BF16"
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_allowed():
    """False when ``$DIGITS_BF16`` is off (or 0, false, no): bf16 then stays off whatever the config says."""
    return os.environ.get(BF16_ENV, "").strip().lower() not in ("off", "0", "false", "no")


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
    if not bf16_allowed():
        return False
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


def set_pooler_sampling_ratio(model, ratio):
    """Set the sampling ratio of every ROIAlign level of the ROI heads' poolers; returns ``ratio``."""
    for name in ("box_pooler", "mask_pooler", "keypoint_pooler"):
        pooler = getattr(model.roi_heads, name, None)
        for level in getattr(pooler, "level_poolers", []):
            if hasattr(level, "sampling_ratio"):
                level.sampling_ratio = int(ratio)
    return int(ratio)
