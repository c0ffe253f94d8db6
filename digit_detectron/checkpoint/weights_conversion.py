"""
torchvision weights -> detectron2 checkpoints: an ImageNet ResNet as a backbone initialisation, and
the COCO ``fasterrcnn_resnet50_fpn_v2`` detector as a whole (configs/faster_rcnn_R_50_FPN_v2_digits.yaml).

torchvision feeds RGB images scaled to [0, 1] and normalised with the ImageNet mean / std, and puts
the stride of a bottleneck in its 3x3 conv: a config for these weights needs INPUT.FORMAT "RGB",
MODEL.PIXEL_MEAN [123.675, 116.28, 103.53], MODEL.PIXEL_STD [58.395, 57.12, 57.375] and
MODEL.RESNETS.STRIDE_IN_1X1 False.
"""

import pickle
import re

import torch

from ..modeling.torchvision_backbone import ConversionError, load_torchvision_state_dict
from ..utils.io import atomic_open

__all__ = [
    "ConversionError",
    "CONVERTERS",
    "convert_resnet",
    "convert_faster_rcnn_v2",
    "check_architecture",
    "load_torchvision_state_dict",
    "save_detectron2_checkpoint",
]


_RESNET_RULES = [
    (r"conv1\.weight", "stem.conv1.weight"),
    (r"bn1\.(\w+)", r"stem.conv1.norm.\1"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
]


def _rename(key, rules):
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return replacement(match) if callable(replacement) else match.expand(replacement)
    return None


def _rename_into(converted, unknown, key, value, rules):
    """``converted[renamed key] = value``, or ``key`` appended to ``unknown`` when no rule renames it."""
    new_key = _rename(key, rules)
    if new_key is None:
        unknown.append(key)
    else:
        converted[new_key] = value


def _raise_unknown(unknown, what):
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise ConversionError(f"not a torchvision {what} state dict: unknown tensors {shown}")


def convert_resnet(state_dict):
    """
    A torchvision ResNet state dict -> detectron2 ResNet names (``stem.*``, ``res2.*`` .. ``res5.*``).
    The ImageNet classifier (``fc.*``) and the BatchNorm counters (``num_batches_tracked``, which
    detectron2's FrozenBN does not keep) are dropped.
    """
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith(".num_batches_tracked"):
            continue
        _rename_into(converted, unknown, key, value, _RESNET_RULES)
    _raise_unknown(unknown, "ResNet")
    return converted


def _fpn_key(m):
    kind = {"inner_blocks": "fpn_lateral", "layer_blocks": "fpn_output"}[m[1]]
    # torchvision's block i reads layer{i+1} = res{i+2}, which detectron2 names by log2(stride) = i+2.
    return f"backbone.{kind}{int(m[2]) + 2}." + ("" if m[3] == "0" else "norm.") + m[4]


_DETECTOR_RULES = [
    (r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d)\.([01])\.(\w+)", _fpn_key),
    (r"rpn\.head\.conv\.(\d)\.0\.(weight|bias)", r"proposal_generator.rpn_head.conv.conv\1.\2"),
    (r"rpn\.head\.cls_logits\.(weight|bias)", r"proposal_generator.rpn_head.objectness_logits.\1"),
    (r"rpn\.head\.bbox_pred\.(weight|bias)", r"proposal_generator.rpn_head.anchor_deltas.\1"),
    (r"roi_heads\.box_head\.(\d)\.0\.weight", lambda m: f"roi_heads.box_head.conv{int(m[1]) + 1}.weight"),
    (r"roi_heads\.box_head\.(\d)\.1\.(\w+)", lambda m: f"roi_heads.box_head.conv{int(m[1]) + 1}.norm.{m[2]}"),
]


def convert_faster_rcnn_v2(state_dict):
    """
    torchvision ``fasterrcnn_resnet50_fpn_v2`` state dict -> the detectron2 GeneralizedRCNN of
    configs/faster_rcnn_R_50_FPN_v2_digits.yaml (with NUM_CLASSES = torchvision's num_classes - 1).

    The class head is converted faithfully: torchvision's background is class 0, detectron2's the
    last score, so cls_score rows are rotated by one; detectron2 regresses no background box, so the
    first 4 rows of bbox_pred (background deltas, unused by torchvision's inference too) are dropped.
    Loading into a 10-digit model then re-initialises that head (DigitCheckpointer).
    """
    backbone = {k[len("backbone.body.") :]: v for k, v in state_dict.items() if k.startswith("backbone.body.")}
    converted = {"backbone.bottom_up." + k: v for k, v in convert_resnet(backbone).items()}
    fc_indices = sorted(
        int(m[1]) for k in state_dict for m in [re.fullmatch(r"roi_heads\.box_head\.(\d)\.weight", k)] if m
    )
    unknown = []
    for key, value in state_dict.items():
        if key.startswith("backbone.body."):
            continue
        fc = re.fullmatch(r"roi_heads\.box_head\.(\d)\.(weight|bias)", key)
        if fc:
            converted[f"roi_heads.box_head.fc{fc_indices.index(int(fc[1])) + 1}.{fc[2]}"] = value
        elif key.startswith("roi_heads.box_predictor.cls_score."):
            converted[key] = torch.cat([value[1:], value[:1]])
        elif key.startswith("roi_heads.box_predictor.bbox_pred."):
            converted[key] = value[4:]
        else:
            _rename_into(converted, unknown, key, value, _DETECTOR_RULES)
    _raise_unknown(unknown, "fasterrcnn_resnet50_fpn_v2")
    if not any(k.startswith("roi_heads.box_predictor.") for k in converted):
        raise ConversionError("not a torchvision fasterrcnn_resnet50_fpn_v2 state dict: no roi_heads.box_predictor")
    return converted


# torchvision model name -> (converter, whether detectron2 must match names by suffix on load).
# A backbone-only checkpoint uses matching heuristics so that it fits any model holding a ResNet.
CONVERTERS = {
    "resnet18": (convert_resnet, True),
    "resnet34": (convert_resnet, True),
    "resnet50": (convert_resnet, True),
    "resnet101": (convert_resnet, True),
    "fasterrcnn_resnet50_fpn_v2": (convert_faster_rcnn_v2, False),
}


def check_architecture(name, state_dict, source):
    """
    A ConversionError naming ``source`` unless ``state_dict`` holds exactly the tensors (names and
    shapes) of torchvision's ``name`` architecture; a detector's class head may have another class count.
    """
    import torchvision

    kwargs = {"weights_backbone": None} if name.startswith("fasterrcnn") else {}
    expected = torchvision.models.get_model(name, weights=None, **kwargs).state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    reshaped = sorted(
        k
        for k in expected.keys() & state_dict.keys()
        if tuple(expected[k].shape) != tuple(state_dict[k].shape) and not k.startswith("roi_heads.box_predictor.")
    )
    problems = [
        f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
        if keys
    ]
    if problems:
        raise ConversionError(f"{source}: not a torchvision {name} state dict: " + "; ".join(problems))


def save_detectron2_checkpoint(path, model_state, matching_heuristics):
    """
    Write ``model_state`` as a detectron2 checkpoint, atomically: ``.pkl`` as detectron2's model
    zoo stores them (numpy arrays), anything else with torch.save.
    """
    data = {"__author__": "torchvision"}
    if matching_heuristics:
        data["matching_heuristics"] = True
    if path.endswith(".pkl"):
        data["model"] = {k: v.detach().cpu().numpy() for k, v in model_state.items()}
        with atomic_open(path, "wb") as f:
            pickle.dump(data, f)
    else:
        data["model"] = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
        with atomic_open(path, "wb") as f:
            torch.save(data, f)
    return path
