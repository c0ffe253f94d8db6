"""Backbone pre-training on digit crops: crops, checkpoint, loading into the detector, cache."""

import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from digit_detectron import get_digit_cfg
from digit_detectron.checkpoint import DigitCheckpointer
from digit_detectron.config import ConfigError
from digit_detectron.data import register_digits
from digit_detectron.engine.pretrain import (
    BACKGROUND,
    _augment_shapes,
    extract_crops,
    maybe_pretrain,
    pretrain_backbone,
)

from conftest import REPO_ROOT, tiny_model_opts

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
R50_WARMSTART = os.path.join(REPO_ROOT, "configs", "faster_rcnn_R_50_FPN_digits_warmstart.yaml")
MOBILENET = os.path.join(REPO_ROOT, "configs", "digits_cpu_mobilenet_v3.yaml")


def test_crops_hold_digits_and_background(digit_root):
    register_digits(digit_root, "crops")
    dicts = DatasetCatalog.get("crops_train")
    crops, labels = extract_crops(dicts, size=24, jitter=2, background_per_image=1, seed=0)
    num_boxes = sum(len(d["annotations"]) for d in dicts)
    assert crops.shape[1:] == (24, 24, 3) and crops.dtype == np.uint8
    assert (labels != BACKGROUND).sum() == 2 * num_boxes
    digits = sorted(a["category_id"] for d in dicts for a in d["annotations"])
    assert sorted(labels[labels != BACKGROUND].tolist()) == sorted(digits * 2)
    assert 0 < (labels == BACKGROUND).sum() <= len(dicts)
    # The generated digits are bright on a dark background: digit crops hold ink in their centre.
    centre = crops[:, 8:16, 8:16].max(axis=(1, 2, 3))
    assert (centre[labels != BACKGROUND] > 150).mean() > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("config", [CONFIG, R50_WARMSTART, MOBILENET])
def test_pretrained_checkpoint_fills_every_backbone_parameter(config, digit_root, tmp_path):
    register_digits(digit_root, "pt")
    cfg = get_digit_cfg(config, tiny_model_opts(tmp_path) + ["DATASETS.TRAIN", "('pt_train',)"])
    path = str(tmp_path / "backbone.pth")
    summary = pretrain_backbone(cfg, ["pt_train"], path, steps=3, batch_size=8, crop_size=32)
    assert summary["crops"] > 0 and os.path.isfile(path)
    saved = torch.load(path, weights_only=False)["model"]

    model = build_model(cfg)
    DigitCheckpointer(model).load(path)
    state = model.state_dict()
    backbone_keys = {k for k in state if k.startswith("backbone.bottom_up.")}
    assert backbone_keys == set(saved)
    for k in backbone_keys:
        assert torch.equal(state[k], saved[k]), k
    # BN statistics were learned, not left at their init.
    assert any(k.endswith("running_mean") and saved[k].abs().sum() > 0 for k in saved)


@pytest.mark.slow
def test_maybe_pretrain_caches_the_warm_start(digit_root, tmp_path):
    register_digits(digit_root, "cache")
    opts = tiny_model_opts(tmp_path) + [
        "DATASETS.TRAIN",
        "('cache_train',)",
        "DIGITS.PRETRAIN.ENABLED",
        "True",
        "DIGITS.PRETRAIN.STEPS",
        "2",
        "DIGITS.PRETRAIN.BATCH_SIZE",
        "4",
        "DIGITS.PRETRAIN.CACHE_DIR",
        str(tmp_path / "cache"),
    ]
    cfg = get_digit_cfg(CONFIG, opts)
    path = maybe_pretrain(cfg)
    assert cfg.MODEL.WEIGHTS == path and os.path.isfile(path)
    mtime = os.path.getmtime(path)
    again = get_digit_cfg(CONFIG, opts)
    assert maybe_pretrain(again) == path and os.path.getmtime(path) == mtime  # reused, not re-trained
    changed = get_digit_cfg(CONFIG, opts + ["DIGITS.PRETRAIN.STEPS", "3"])
    assert maybe_pretrain(changed) != path
    other = "basic" if cfg.DIGITS.PRETRAIN.AUGMENT == "shapes" else "shapes"
    augmented = get_digit_cfg(CONFIG, opts + ["DIGITS.PRETRAIN.AUGMENT", other])
    augmented_path = maybe_pretrain(augmented)
    assert augmented_path not in (path, changed.MODEL.WEIGHTS) and os.path.isfile(augmented_path)
    explicit = get_digit_cfg(CONFIG, opts + ["MODEL.WEIGHTS", "x.pth"])
    assert maybe_pretrain(explicit) is None and explicit.MODEL.WEIGHTS == "x.pth"


def test_r50_warmstart_config_pretrains_instead_of_loading_imagenet_weights():
    cfg = get_digit_cfg(R50_WARMSTART)
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.WEIGHTS == ""
    assert cfg.DIGITS.PRETRAIN.ENABLED and cfg.MODEL.RESNETS.NORM == "BN"
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == get_digit_cfg(CONFIG).MODEL.ANCHOR_GENERATOR.SIZES


def _bar_crops(n=64, size=32):
    """Dark crops, each with one bright vertical bar (a "1") in its centre."""
    crops = torch.full((n, 3, size, size), 20, dtype=torch.uint8)
    crops[:, :, 8:24, 14:18] = 230
    return crops


def test_shape_augmentation_varies_glyphs_but_keeps_them_centred():
    crops = _bar_crops()
    out = _augment_shapes(crops, torch.Generator().manual_seed(0))
    assert out.shape == crops.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    again = _augment_shapes(crops, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # deterministic per generator seed
    assert not torch.equal(out, _augment_shapes(crops, torch.Generator().manual_seed(1)))
    # The ink (bright or, after an inversion, dark) stays near the centre: the label still holds.
    grey = out.mean(dim=1)
    background = grey[:, :2, :2].mean(dim=(1, 2), keepdim=True)
    ink = (grey - background).abs()
    ink = ink / ink.sum(dim=(1, 2), keepdim=True)
    coords = torch.arange(32, dtype=torch.float32) + 0.5
    cx = (ink.sum(dim=1) * coords).sum(dim=1)
    cy = (ink.sum(dim=2) * coords).sum(dim=1)
    assert (cx - 16).abs().max() < 3 and (cy - 16).abs().max() < 3
    # Widths differ from crop to crop (condensed .. expanded, thinner .. thicker strokes).
    widths = (ink > ink.amax(dim=(1, 2), keepdim=True) / 2).float().sum(dim=2).amax(dim=1)
    assert widths.max() - widths.min() >= 2


def test_bad_pretrain_augment_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="DIGITS.PRETRAIN.AUGMENT"):
        get_digit_cfg(CONFIG, tiny_model_opts(tmp_path) + ["DIGITS.PRETRAIN.AUGMENT", "heavy"])


READY_CONFIG = os.path.join(REPO_ROOT, "configs", "digits_ready.yaml")


def _from_opts(tmp_path, source):
    return tiny_model_opts(tmp_path) + [
        "DIGITS.PRETRAIN.FROM",
        str(source),
        "DIGITS.PRETRAIN.CACHE_DIR",
        str(tmp_path / "cache"),
    ]


def test_backbone_from_a_trained_model_fills_the_backbone_and_leaves_the_rest_fresh(tmp_path):
    """DIGITS.PRETRAIN.FROM: the detector starts from another model's bottom-up backbone, not a warm start."""
    trained = build_model(get_digit_cfg(CONFIG, tiny_model_opts(tmp_path)))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh model has
    source_state = trained.state_dict()
    source = tmp_path / "trained.pth"
    torch.save({"model": source_state}, source)
    # FROM wins over the crop warm start (which these settings would run).
    cfg = get_digit_cfg(CONFIG, _from_opts(tmp_path, source) + ["DIGITS.PRETRAIN.ENABLED", "True"])
    path = maybe_pretrain(cfg)
    assert cfg.MODEL.WEIGHTS == path and os.path.dirname(path) == str(tmp_path / "cache")
    saved = torch.load(path, weights_only=True)["model"]
    assert set(saved) == {k for k in source_state if k.startswith("backbone.bottom_up.")}
    model = build_model(cfg)
    DigitCheckpointer(model).load(path)
    state = model.state_dict()
    for key in saved:
        assert torch.equal(state[key], source_state[key]), key
    for key in ("backbone.fpn_lateral2.weight", "roi_heads.box_predictor.cls_score.weight"):
        assert not torch.equal(state[key], source_state[key]), key  # the FPN and the heads start fresh
    mtime = os.path.getmtime(path)
    again = get_digit_cfg(CONFIG, _from_opts(tmp_path, source))
    assert maybe_pretrain(again) == path and os.path.getmtime(path) == mtime  # cut once, reused
    explicit = get_digit_cfg(CONFIG, _from_opts(tmp_path, source) + ["MODEL.WEIGHTS", "x.pth"])
    assert maybe_pretrain(explicit) is None and explicit.MODEL.WEIGHTS == "x.pth"


def test_backbone_from_the_ready_model(tmp_path):
    """ "ready" is the package's ready model: its backbone starts a detector of its architecture."""
    from digit_detectron.checkpoint.bundle import READY_MODEL, safe_torch_load

    cfg = get_digit_cfg(READY_CONFIG, _from_opts(tmp_path, "ready"))
    saved = torch.load(maybe_pretrain(cfg), weights_only=True)["model"]
    ready = safe_torch_load(READY_MODEL)["model"]  # float16 weights
    assert len(saved) == len([k for k in ready if k.startswith("backbone.bottom_up.")]) > 50
    for key, value in saved.items():
        # float16 in the slim bundle, float32 here (BatchNorm's step count stays an integer)
        assert value.dtype == (torch.int64 if key.endswith("num_batches_tracked") else torch.float32), key
        assert torch.equal(value, ready[key].to(value.dtype)), key


def test_backbone_from_a_model_of_another_architecture_names_the_key_file_and_layer(tmp_path):
    # The ready model has no res5: a config whose backbone has one cannot start from it.
    with pytest.raises(ConfigError, match=r"DIGITS.PRETRAIN.FROM 'ready': .*digits_ready.pth has no backbone"):
        maybe_pretrain(get_digit_cfg(CONFIG, _from_opts(tmp_path, "ready")))
    state = build_model(get_digit_cfg(CONFIG, tiny_model_opts(tmp_path))).state_dict()
    state["backbone.bottom_up.stem.conv1.weight"] = torch.zeros(3, 3)
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": state}, wrong)
    with pytest.raises(ConfigError, match=r"wrong.pth's backbone.bottom_up.stem.conv1.weight is \(3, 3\)"):
        maybe_pretrain(get_digit_cfg(CONFIG, _from_opts(tmp_path, wrong)))
    with pytest.raises(ConfigError, match=r"DIGITS.PRETRAIN.FROM .*missing.pth: no such model file"):
        maybe_pretrain(get_digit_cfg(CONFIG, _from_opts(tmp_path, tmp_path / "missing.pth")))
    not_a_model = tmp_path / "notes.pth"
    not_a_model.write_text("not a torch file")
    with pytest.raises(ConfigError, match=r"DIGITS.PRETRAIN.FROM .*notes.pth"):
        maybe_pretrain(get_digit_cfg(CONFIG, _from_opts(tmp_path, not_a_model)))
