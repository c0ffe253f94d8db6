"""
Pretrained weights: torchvision -> detectron2 conversion (same outputs layer by layer), DigitCheckpointer's
re-initialisation of a head trained for another class count, its errors, and its atomic saves.
"""

import contextlib
import importlib.util
import io
import logging
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from torch import nn
from torchvision.models.detection.image_list import ImageList

from digit_detectron import get_digit_cfg
from digit_detectron.checkpoint import CheckpointError, DigitCheckpointer
from digit_detectron.utils import cli

from conftest import REPO_ROOT, tiny_model_opts

_spec = importlib.util.spec_from_file_location(
    "convert_torchvision_weights", os.path.join(REPO_ROOT, "tools", "convert_torchvision_weights.py")
)
convert_torchvision_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_torchvision_weights)

# torchvision's detector: num_classes=91 counts the background, detectron2's NUM_CLASSES does not.
TORCHVISION_DETECTOR = [
    "MODEL.ROI_HEADS.NUM_CLASSES",
    "90",
    "MODEL.ANCHOR_GENERATOR.SIZES",
    "[[32], [64], [128], [256], [512]]",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "[[0.5, 1.0, 2.0]]",
]
IMAGE_HW = (64, 128)  # not square (a transposed tensor would not fit), a multiple of the p6 stride


def randomize_norms(model, generator):
    """Random BatchNorm statistics / affines and non-zero biases, so that every converted tensor matters."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.normal_(0, 0.1, generator=generator)


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert scale > 0, f"{what}: all zeros, the comparison would prove nothing"
    assert diff <= 1e-4 * scale, f"{what}: max abs diff {diff:.3g} at scale {scale:.3g}"


def run_tool(argv):
    """tools/convert_torchvision_weights.py with ``argv``; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.run_tool(convert_torchvision_weights.main, argv)
    return out.getvalue()


def image_batch(seed):
    """A random 0..255 RGB image batch and its torchvision normalisation (to [0, 1], ImageNet mean / std)."""
    pixels = torch.rand(1, 3, *IMAGE_HW, generator=torch.Generator().manual_seed(seed)) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return pixels, (pixels / 255 - mean) / std


@contextlib.contextmanager
def checkpoint_log(name="digit_detectron.checkpoint"):
    """Collect the warnings of logger ``name``, whatever its propagation."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    log = logging.getLogger(name)
    log.addHandler(handler)
    try:
        yield records
    finally:
        log.removeHandler(handler)


# ---------------------------------------------------------------------------------------------
# fasterrcnn_resnet50_fpn_v2 -> configs/faster_rcnn_R_50_FPN_v2_digits.yaml


@pytest.fixture(scope="module")
def torchvision_detector():
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
    randomize_norms(model, torch.Generator().manual_seed(1))
    return model.eval()


@pytest.fixture(scope="module")
def converted_detector(torchvision_detector, tmp_path_factory):
    """(path of the converted checkpoint, what the tool printed)."""
    tmp = tmp_path_factory.mktemp("detector")
    torch.save(torchvision_detector.state_dict(), tmp / "tv.pth")
    output = str(tmp / "weights" / "frcnn_v2_d2.pth")
    printed = run_tool(
        [
            "fasterrcnn_resnet50_fpn_v2",
            "--input",
            str(tmp / "tv.pth"),
            "--output",
            str(tmp / "weights"),
            "--name",
            "frcnn_v2_d2.pth",
        ]
    )
    return output, printed


@pytest.fixture(scope="module")
def detectron2_detector(converted_detector):
    path, _ = converted_detector
    cfg = get_digit_cfg(
        os.path.join(REPO_ROOT, "configs", "faster_rcnn_R_50_FPN_v2_digits.yaml"),
        TORCHVISION_DETECTOR + ["MODEL.WEIGHTS", path],
    )
    torch.manual_seed(2)
    model = build_model(cfg).eval()
    DigitCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return cfg, model


@pytest.fixture(scope="module")
def detector_features(torchvision_detector, detectron2_detector):
    """FPN outputs of both models on the same image: (torchvision's, detectron2's) in p2..p6 order."""
    cfg, model = detectron2_detector
    pixels, normalised = image_batch(seed=3)
    d2_input = (pixels - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        tv = list(torchvision_detector.backbone(normalised).values())
        d2 = model.backbone(d2_input)
    return tv, [d2[f] for f in ("p2", "p3", "p4", "p5", "p6")]


@pytest.mark.slow
def test_converted_detector_fills_every_parameter(converted_detector, detectron2_detector):
    path, printed = converted_detector
    _, model = detectron2_detector
    assert path in printed
    converted = torch.load(path, weights_only=True)
    assert converted["__author__"] == "torchvision" and "matching_heuristics" not in converted
    model_state = model.state_dict()
    unused = sorted(set(converted["model"]) - set(model_state))
    unfilled = sorted(set(model_state) - set(converted["model"]))
    assert not unused and not unfilled, f"converted tensors the model lacks: {unused}; unfilled: {unfilled}"
    differ = [k for k, v in converted["model"].items() if not torch.equal(model_state[k], v)]
    assert not differ, f"loaded values differ from the checkpoint: {differ}"


def test_v2_config_normalises_pixels_as_torchvision(torchvision_detector, detectron2_detector):
    cfg, model = detectron2_detector
    transform = torchvision_detector.transform
    assert cfg.INPUT.FORMAT == "RGB"
    assert torch.allclose(model.pixel_mean.flatten() / 255, torch.tensor(transform.image_mean))
    assert torch.allclose(model.pixel_std.flatten() / 255, torch.tensor(transform.image_std))


def test_fpn_levels_equal(detector_features):
    tv, d2 = detector_features
    assert len(tv) == len(d2) == 5
    for level, (a, b) in enumerate(zip(d2, tv), start=2):
        assert_close(a, b, f"p{level}")


def test_rpn_objectness_deltas_and_anchors_equal(torchvision_detector, detectron2_detector, detector_features):
    _, model = detectron2_detector
    tv_features, d2_features = detector_features
    rpn = model.proposal_generator
    with torch.no_grad():
        tv_logits, tv_deltas = torchvision_detector.rpn.head(tv_features)
        d2_logits, d2_deltas = rpn.rpn_head(d2_features)
    for level in range(5):
        assert_close(d2_logits[level], tv_logits[level], f"objectness p{level + 2}")
        assert_close(d2_deltas[level], tv_deltas[level], f"anchor deltas p{level + 2}")

    # Same anchor per output channel: torchvision rounds its cell anchors to whole pixels.
    images = ImageList(torch.zeros(1, 3, *IMAGE_HW), [IMAGE_HW])
    tv_anchors = torchvision_detector.rpn.anchor_generator(images, tv_features)[0]
    d2_anchors = torch.cat([b.tensor for b in rpn.anchor_generator(d2_features)])
    assert d2_anchors.shape == tv_anchors.shape
    assert (d2_anchors - tv_anchors).abs().max() <= 0.5
    assert rpn.box2box_transform.weights == torchvision_detector.rpn.box_coder.weights
    assert rpn.box2box_transform.scale_clamp == pytest.approx(torchvision_detector.rpn.box_coder.bbox_xform_clip)


def test_box_head_scores_and_deltas_equal(torchvision_detector, detectron2_detector, detector_features):
    _, model = detectron2_detector
    tv_features, d2_features = detector_features
    # Inside the image (level p2) and reaching past it (p3, p4, p5 by the canonical 224 px rule).
    boxes = torch.tensor(
        [
            [4.3, 6.1, 40.7, 50.2],
            [30.5, 10.2, 120.8, 90.3],
            [-20.0, -10.0, 140.0, 110.0],
            [-60.0, -50.0, 200.0, 150.0],
            [-200.0, -200.0, 400.0, 300.0],
        ]
    )
    roi_heads = model.roi_heads
    with torch.no_grad():
        tv_heads = torchvision_detector.roi_heads
        tv_pooled = tv_heads.box_roi_pool(dict(zip("0123", tv_features[:4])), [boxes], [IMAGE_HW])
        tv_scores, tv_deltas = tv_heads.box_predictor(tv_heads.box_head(tv_pooled))
        levels = [f"p{k}" for k in range(2, 6)]
        assert roi_heads.box_in_features == levels
        d2_pooled = roi_heads.box_pooler(d2_features[:4], [Boxes(boxes)])
        d2_scores, d2_deltas = roi_heads.box_predictor(roi_heads.box_head(d2_pooled))
    assert_close(d2_pooled, tv_pooled, "pooled box features")
    # torchvision: background first, 91 classes x 4 deltas; detectron2: background last, 90 x 4.
    assert_close(d2_scores, torch.cat([tv_scores[:, 1:], tv_scores[:, :1]], dim=1), "class scores")
    assert_close(d2_deltas, tv_deltas[:, 4:], "box deltas")
    assert roi_heads.box_predictor.box2box_transform.weights == tv_heads.box_coder.weights


@pytest.mark.slow
def test_v2_digit_config_loads_the_coco_detector(converted_detector):
    """As shipped (10 digits, 4 digit anchors per location): only the output layers start afresh."""
    path, _ = converted_detector
    cfg = get_digit_cfg(
        os.path.join(REPO_ROOT, "configs", "faster_rcnn_R_50_FPN_v2_digits.yaml"), ["MODEL.WEIGHTS", path]
    )
    model = build_model(cfg).eval()
    with checkpoint_log() as records, checkpoint_log("fvcore.common.checkpoint") as fvcore_records:
        DigitCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    assert not fvcore_records, [r.getMessage() for r in fvcore_records]  # no missing / unexpected tensors
    message = records[0].getMessage()
    assert "the checkpoint has 90 classes, the model 10" in message
    assert "the checkpoint has 3 anchors per location, the model 4" in message
    converted = torch.load(path, weights_only=True)["model"]
    outputs = ("cls_score.", "bbox_pred.", "objectness_logits.", "anchor_deltas.")
    kept = [k for k in model.state_dict() if not any(o in k for o in outputs)]
    assert all(torch.equal(model.state_dict()[k], converted[k]) for k in kept)
    pixels, _ = image_batch(seed=7)
    with torch.no_grad():
        (result,) = model([{"image": pixels[0], "height": IMAGE_HW[0], "width": IMAGE_HW[1]}])
    assert result["instances"].image_size == IMAGE_HW


# ---------------------------------------------------------------------------------------------
# ImageNet resnet50 -> the backbone of configs/faster_rcnn_R_50_FPN_digits.yaml


@pytest.fixture(scope="module")
def resnet_pair(tmp_path_factory):
    """(torchvision resnet50, detectron2 model loaded from its conversion, converted checkpoint)."""
    torch.manual_seed(4)
    resnet = torchvision.models.resnet50(weights=None)
    randomize_norms(resnet, torch.Generator().manual_seed(5))
    resnet.eval()
    tmp = tmp_path_factory.mktemp("resnet")
    torch.save(resnet.state_dict(), tmp / "resnet50.pth")
    output = str(tmp / "R-50-torchvision.pkl")
    run_tool(["resnet50", "--input", str(tmp / "resnet50.pth"), "--output", str(tmp)])
    cfg = get_digit_cfg(
        os.path.join(REPO_ROOT, "configs", "faster_rcnn_R_50_FPN_digits.yaml"),
        [
            "MODEL.WEIGHTS",
            output,
            "INPUT.FORMAT",
            "RGB",
            "MODEL.RESNETS.STRIDE_IN_1X1",
            "False",
            "MODEL.PIXEL_MEAN",
            "[123.675, 116.28, 103.53]",
            "MODEL.PIXEL_STD",
            "[58.395, 57.12, 57.375]",
        ],
    )
    model = build_model(cfg).eval()
    DigitCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    with open(output, "rb") as f:
        converted = pickle.load(f)
    return resnet, model, converted


@pytest.mark.slow
def test_resnet_conversion_fills_the_backbone(resnet_pair):
    _, model, converted = resnet_pair
    assert converted["matching_heuristics"] is True and converted["__author__"] == "torchvision"
    model_state = model.state_dict()
    bottom_up = {k for k in model_state if k.startswith("backbone.bottom_up.")}
    used = {"backbone.bottom_up." + k for k in converted["model"]}
    assert used == bottom_up, f"unused: {sorted(used - bottom_up)}; unfilled: {sorted(bottom_up - used)}"
    differ = [k for k, v in converted["model"].items() if not np.array_equal(model_state["backbone.bottom_up." + k], v)]
    assert not differ, f"loaded values differ from the checkpoint: {differ}"


def test_resnet_stages_equal_torchvision_layers(resnet_pair):
    resnet, model, _ = resnet_pair
    pixels, normalised = image_batch(seed=6)
    with torch.no_grad():
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(normalised))))
        expected = {}
        for stage in (2, 3, 4, 5):
            x = getattr(resnet, f"layer{stage - 1}")(x)
            expected[f"res{stage}"] = x
        actual = model.backbone.bottom_up((pixels - model.pixel_mean) / model.pixel_std)
    for stage, value in expected.items():
        assert_close(actual[stage], value, stage)


def test_tool_rejects_weights_of_another_model(torchvision_detector, tmp_path, capsys):
    detector_dict = tmp_path / "detector.pth"
    torch.save({k: v for k, v in torchvision_detector.state_dict().items() if "rpn" in k}, detector_dict)
    with pytest.raises(SystemExit) as error:
        run_tool(["resnet50", "--input", str(detector_dict), "--output", str(tmp_path), "--name", "r.pkl"])
    assert str(detector_dict) in str(error.value) and "not a torchvision ResNet state dict" in str(error.value)
    with pytest.raises(SystemExit) as error:
        run_tool(["resnet50", "--input", str(tmp_path / "missing.pth"), "--output", str(tmp_path), "--name", "x.pkl"])
    assert "missing.pth: file not found" in str(error.value)
    assert not (tmp_path / "r.pkl").exists()


# ---------------------------------------------------------------------------------------------
# DigitCheckpointer


def small_model(tmp_path, *opts, seed=0):
    cfg = get_digit_cfg(os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml"), tiny_model_opts(tmp_path) + list(opts))
    torch.manual_seed(seed)
    return build_model(cfg)


def test_class_count_mismatch_reinitialises_the_heads(tmp_path):
    three_ratios = [  # one size per level x three ratios: 3 anchors per location
        "MODEL.ANCHOR_GENERATOR.SIZES",
        "[[16], [24], [32], [48], [64]]",
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
        "[[0.5, 1.0, 2.0]]",
    ]
    five = small_model(tmp_path, "MODEL.ROI_HEADS.NUM_CLASSES", "5", *three_ratios, seed=1)
    DigitCheckpointer(five, str(tmp_path)).save("five_classes")
    ten = small_model(tmp_path, seed=2)  # 10 classes, 4 anchors per location
    heads = {
        "roi_heads.box_predictor.cls_score": 0.01,
        "roi_heads.box_predictor.bbox_pred": 0.001,
        "proposal_generator.rpn_head.objectness_logits": 0.01,
        "proposal_generator.rpn_head.anchor_deltas": 0.01,
    }
    with torch.no_grad():
        for name in heads:  # whatever the model held must not survive the load
            ten.get_submodule(name).weight.fill_(5.0)
            ten.get_submodule(name).bias.fill_(5.0)
    path = str(tmp_path / "five_classes.pth")
    with checkpoint_log() as records:
        DigitCheckpointer(ten).load(path)

    for name, std in heads.items():
        layer = ten.get_submodule(name)
        assert torch.all(layer.bias == 0), name
        assert 0.7 * std < layer.weight.std().item() < 1.3 * std, name
    assert ten.roi_heads.box_predictor.cls_score.weight.shape[0] == 11
    assert ten.roi_heads.box_predictor.bbox_pred.weight.shape[0] == 40
    reinitialised = tuple(f"{name}.{p}" for name in heads for p in ("weight", "bias"))
    five_state, ten_state = five.state_dict(), ten.state_dict()
    rest = [k for k in ten_state if not k.startswith(reinitialised)]
    assert len(rest) > 100
    assert all(torch.equal(ten_state[k], five_state[k]) for k in rest)

    messages = [r.getMessage() for r in records]
    assert len(messages) == 1, messages
    fc_dim = ten.roi_heads.box_predictor.cls_score.weight.shape[1]
    for part in (
        path,
        "the checkpoint has 5 classes, the model 10",
        "3 anchors per location, the model 4",
        f"roi_heads.box_predictor.cls_score.weight: (6, {fc_dim}) vs (11, {fc_dim})",
        f"roi_heads.box_predictor.bbox_pred.weight: (20, {fc_dim}) vs (40, {fc_dim})",
        "proposal_generator.rpn_head.objectness_logits.bias: (3,) vs (4,)",
    ):
        assert part in messages[0]


def test_model_zoo_url_loads_with_class_head_reinitialised(tmp_path, monkeypatch):
    """detectron2:// resolves to dl.fbaipublicfiles.com, served from the download cache when present."""
    coco = small_model(tmp_path, "MODEL.ROI_HEADS.NUM_CLASSES", "80", seed=3)
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "detectron2" / "Test-Digits" / "coco_80" / "model_final_0123.pkl"
    cached.parent.mkdir(parents=True)
    state = {k: v.numpy() for k, v in coco.state_dict().items()}
    with open(cached, "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    ten = small_model(tmp_path, seed=4)
    with checkpoint_log() as records:
        DigitCheckpointer(ten).load("detectron2://Test-Digits/coco_80/model_final_0123.pkl")
    assert "the checkpoint has 80 classes, the model 10" in records[0].getMessage()
    assert torch.equal(ten.backbone.bottom_up.stem.conv1.weight, coco.backbone.bottom_up.stem.conv1.weight)
    assert torch.all(ten.roi_heads.box_predictor.cls_score.bias == 0)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    DigitCheckpointer(small_model(tmp_path), str(tmp_path)).save("fpn32")
    wider = small_model(tmp_path, "MODEL.FPN.OUT_CHANNELS", "48")
    with pytest.raises(CheckpointError) as error:
        DigitCheckpointer(wider).load(str(tmp_path / "fpn32.pth"))
    message = str(error.value)
    assert str(tmp_path / "fpn32.pth") in message
    assert "backbone.fpn_output2.weight: (32, 32, 3, 3) vs (48, 48, 3, 3)" in message


def test_unreadable_or_missing_checkpoint_names_the_file(tmp_path):
    model = nn.Linear(4, 2)
    DigitCheckpointer(model, str(tmp_path)).save("whole")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pkl").write_text("not a pickle")
    for name in ("truncated.pth", "text.pkl"):
        with pytest.raises(CheckpointError, match=f"{tmp_path / name}: not a readable checkpoint"):
            DigitCheckpointer(model).load(str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="missing.pth: checkpoint not found"):
        DigitCheckpointer(model).load(str(tmp_path / "missing.pth"))


KILLED_SAVE = """
import resource, signal, sys
import torch
from digit_detectron.checkpoint import DigitCheckpointer
model = torch.nn.Linear(256, 256)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
model(torch.ones(1, 256)).sum().backward()
optimizer.step()
# Writing past the limit kills the process mid-write (Python ignores SIGXFSZ: restore the default).
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
DigitCheckpointer(model, sys.argv[1], optimizer=optimizer).save("model_final")
"""


@pytest.mark.slow
def test_save_killed_midway_leaves_the_previous_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(256, 256)
    DigitCheckpointer(model, str(tmp_path)).save("model_final")
    limit = 64 * 1024  # the new checkpoint holds ~520 KB
    result = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(tmp_path), str(limit)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == -signal.SIGXFSZ, result.stderr
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1 and partial[0].stat().st_size == limit  # it did die in the middle of the write

    restored = nn.Linear(256, 256)
    checkpointer = DigitCheckpointer(restored, str(tmp_path))
    assert sorted(os.path.basename(p) for p in checkpointer.get_all_checkpoint_files()) == ["model_final.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_final.pth")
    checkpointer.resume_or_load("", resume=True)
    assert torch.equal(restored.weight, model.weight) and torch.equal(restored.bias, model.bias)
