"""Shipped configs load, build, and keep the digit-specific choices."""

import glob
import os

import pytest
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from digit_detectron import get_digit_cfg
from digit_detectron.data import build_digit_augmentation
from digit_detectron.data.transforms import (
    RandomColorJitter,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomInvert,
    RandomNoise,
    RandomWidthScale,
)

from conftest import REPO_ROOT

CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_without_flip_and_with_four_anchors(path):
    cfg = get_digit_cfg(path)
    assert cfg.INPUT.RANDOM_FLIP == "none"
    augs = build_digit_augmentation(cfg, is_train=True)
    assert not any(isinstance(a, T.RandomFlip) for a in augs)
    sizes, ratios = cfg.MODEL.ANCHOR_GENERATOR.SIZES, cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS
    assert all(len(s) * len(ratios[0]) == 4 for s in sizes)  # 4 anchors per location
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 10


def test_reference_design_values():
    cfg = get_digit_cfg(os.path.join(REPO_ROOT, "configs", "faster_rcnn_R_50_FPN_digits.yaml"))
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[4], [8], [12], [24], [48]]
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[0.5, 1.0, 1.5, 2.0]]
    assert (cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION, cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO) == (7, 2)
    assert cfg.MODEL.ROI_HEADS.IN_FEATURES == ["p2", "p3", "p4", "p5"]
    assert cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION == 0.25
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY) == ("AdamW", 1e-4, 1e-4)
    assert (cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.BASE_LR_END) == ("WarmupCosineLR", 1e-6)
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.EPOCHS) == (8, 15)
    assert (cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST) == (0.5, 0.5)
    assert (cfg.DIGITS.TEST_MODE.SCORE_THRESH, cfg.DIGITS.TEST_MODE.NMS_THRESH) == (0.7, 0.3)
    augs = build_digit_augmentation(cfg, is_train=True)
    jitter = next(a for a in augs if isinstance(a, RandomColorJitter))
    blur = next(a for a in augs if isinstance(a, RandomGaussianBlur))
    assert (jitter.prob, jitter.brightness, jitter.contrast, jitter.saturation) == (0.3, 0.2, 0.2, 0.2)
    assert (blur.prob, blur.kernel_size, tuple(blur.sigma)) == (0.3, 3, (0.3, 0.8))


def test_rpn_predicts_four_anchors_per_location():
    cfg = get_digit_cfg(
        os.path.join(REPO_ROOT, "configs", "faster_rcnn_R_50_FPN_digits.yaml"),
        ["MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"],
    )
    model = build_model(cfg).eval()
    rpn = model.proposal_generator
    assert rpn.anchor_generator.num_cell_anchors == [4] * 5
    assert rpn.rpn_head.objectness_logits.out_channels == 4
    assert rpn.rpn_head.anchor_deltas.out_channels == 4 * 4
    features = model.backbone(torch.zeros(1, 3, 64, 128))
    logits, _ = rpn.rpn_head([features[f] for f in rpn.in_features])
    for f, lg in zip(rpn.in_features, logits):
        assert lg.shape[1] == 4 and lg.shape[2:] == features[f].shape[2:]


def test_photometric_augmentations_keep_geometry():
    import numpy as np

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    for aug in (RandomColorJitter(1.0, 0.2, 0.2, 0.2), RandomGaussianBlur(1.0, 3, (0.3, 0.8))):
        t = aug.get_transform(img)
        out = t.apply_image(img)
        assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
        boxes = np.array([[1.0, 2.0, 5.0, 9.0]])
        assert np.array_equal(t.apply_box(boxes), boxes)


def test_new_photometric_augmentations_change_pixels_as_named_and_keep_boxes():
    import numpy as np

    img = np.random.default_rng(1).integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    boxes = np.array([[1.0, 2.0, 5.0, 9.0]])
    gray = RandomGrayscale(1.0).get_transform(img)
    out = gray.apply_image(img)
    assert (out == out[:, :, :1]).all() and np.abs(out[:, :, 0].astype(int) - img.mean(2)).max() <= 1
    assert np.array_equal(RandomInvert(1.0).get_transform(img).apply_image(img), 255 - img)
    noise = RandomNoise(1.0, (4.0, 4.0)).get_transform(img)
    first, again = noise.apply_image(img), noise.apply_image(img)
    assert np.array_equal(first, again) and 2 < np.abs(first.astype(float) - img).mean() < 6  # one draw per image
    for t in (gray, noise):
        assert np.array_equal(t.apply_box(boxes), boxes)
    for aug in (RandomGrayscale(0.0), RandomInvert(0.0), RandomNoise(0.0, (4.0, 4.0))):
        assert np.array_equal(aug.get_transform(img).apply_image(img), img)


def test_recipe_rotation_moves_boxes_with_the_image():
    import numpy as np

    opts = ["INPUT.ROTATION.PROB", "1.0", "INPUT.WIDTH_SCALE.PROB", "0.0"]  # the rotation right after the resize
    cfg = get_digit_cfg(os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml"), opts)
    augs = build_digit_augmentation(cfg, is_train=True)
    names = [type(a).__name__ for a in augs]
    assert names[:2] == ["ResizeShortestEdge", "RandomApply"] and "RandomInvert" in names and "RandomNoise" in names
    img = np.zeros((40, 80, 3), np.uint8)
    img[10:30, 30:40] = 255
    aug_input = T.AugInput(img, boxes=np.array([[30.0, 10.0, 40.0, 30.0]]))
    T.AugmentationList(augs[1:2])(aug_input)  # the rotation alone
    (x0, y0, x1, y1) = aug_input.boxes[0]
    ys, xs = np.nonzero(aug_input.image[:, :, 0] > 127)
    assert x0 <= xs.min() + 1 and xs.max() - 1 <= x1 and y0 <= ys.min() + 1 and ys.max() - 1 <= y1


def test_width_scale_resizes_the_width_only_and_moves_boxes_with_it():
    import numpy as np

    img = np.zeros((40, 80, 3), np.uint8)
    img[10:30, 30:40] = 255
    np.random.seed(0)
    widths = set()
    for _ in range(20):
        t = RandomWidthScale(1.0, (0.75, 1.33)).get_transform(img)
        out = t.apply_image(img)
        assert out.shape[0] == 40 and 60 <= out.shape[1] <= 107
        widths.add(out.shape[1])
        (x0, y0, x1, y1) = t.apply_box(np.array([[30.0, 10.0, 40.0, 30.0]]))[0]
        f = out.shape[1] / 80
        assert (y0, y1) == (10.0, 30.0) and x0 == pytest.approx(30 * f) and x1 == pytest.approx(40 * f)
        ys, xs = np.nonzero(out[:, :, 0] > 127)
        assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1
    assert len(widths) > 5  # condensed and expanded
    assert np.array_equal(RandomWidthScale(0.0, (0.75, 1.33)).get_transform(img).apply_image(img), img)
    cfg = get_digit_cfg(os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml"), ["INPUT.WIDTH_SCALE.PROB", "0.5"])
    names = [type(a).__name__ for a in build_digit_augmentation(cfg, is_train=True)]
    assert names[:2] == ["ResizeShortestEdge", "RandomWidthScale"]
    assert "RandomWidthScale" not in [type(a).__name__ for a in build_digit_augmentation(cfg, is_train=False)]


@pytest.mark.parametrize("opts", [["INPUT.WIDTH_SCALE.RANGE", "(1.2, 0.8)"], ["INPUT.WIDTH_SCALE.PROB", "1.5"]])
def test_bad_width_scale_names_the_key(opts):
    from digit_detectron.config import ConfigError

    with pytest.raises(ConfigError, match="INPUT.WIDTH_SCALE"):
        get_digit_cfg(os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml"), opts)


def test_weights_named_ready_are_the_packages_ready_model(monkeypatch):
    from digit_detectron.checkpoint import bundle
    from digit_detectron.config import ConfigError, get_model_cfg

    cfg = get_digit_cfg(os.path.join(REPO_ROOT, "configs", "digits_demo.yaml"))
    assert cfg.MODEL.WEIGHTS == bundle.READY_MODEL and os.path.isfile(cfg.MODEL.WEIGHTS)
    assert get_digit_cfg(None, ["MODEL.WEIGHTS", "ready"]).MODEL.WEIGHTS == bundle.READY_MODEL
    # A tool's --weights ready: the bundle's own config comes with it.
    model_cfg = get_model_cfg(None, [], weights="ready")
    assert model_cfg.MODEL.WEIGHTS == bundle.READY_MODEL and model_cfg.MODEL.RESNETS.OUT_FEATURES == [
        "res2",
        "res3",
        "res4",
    ]
    # An installation without the ready model says so, naming the key.
    monkeypatch.setattr(bundle, "READY_MODEL", os.path.join(REPO_ROOT, "no_such_ready_model.pth"))
    with pytest.raises(
        ConfigError, match="MODEL.WEIGHTS 'ready': .*no_such_ready_model.pth: this installation ships no ready"
    ):
        get_digit_cfg(None, ["MODEL.WEIGHTS", "ready"])
