"""
The sparse ROIAlign of training passes (modeling/roi_align.py) computes torchvision's ROIAlign:

* outputs and feature gradients equal to torchvision's to float rounding, for ROIs inside, across and
  beyond the map border, tiny and large ROIs, sampling ratios 1..3, aligned or not, several images;
* deterministic: the same gradient bit for bit on a second pass;
* the box pooler (SparseROIPooler) pools all FPN levels in one product: outputs and gradients equal to
  detectron2's ROIPooler with torchvision's op when ROIs fall on several levels and one level is empty;
  eval mode and no-grad passes are detectron2's forward bit for bit;
* only training-mode passes that need a feature gradient take it (eval mode and no-grad passes are
  torchvision's op, bit for bit);
* the digits model trains through it (MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN "sparse", the default):
  one real training step's losses and gradients match the "torchvision" setting's.
"""

import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.layers import ROIAlign
from detectron2.modeling import build_model
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from torchvision.ops import roi_align

from digit_detectron import get_digit_cfg
from digit_detectron.data import DigitDatasetMapper, register_digits
from digit_detectron.modeling.roi_align import (
    SparseROIAlign,
    SparseROIPooler,
    sparse_roi_align,
    use_sparse_training_pass,
)
from digit_detectron.utils.errors import ConfigError

from conftest import REPO_ROOT, tiny_model_opts

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")


def _rois(n_images, height, width, scale, count, seed):
    """ROIs in image coordinates: random ones, plus ROIs across / beyond the border and tiny ones."""
    g = torch.Generator().manual_seed(seed)
    img_h, img_w = height / scale, width / scale
    x1 = torch.rand(count, generator=g) * img_w
    y1 = torch.rand(count, generator=g) * img_h
    x2 = x1 + torch.rand(count, generator=g) * img_w * 0.6
    y2 = y1 + torch.rand(count, generator=g) * img_h * 0.8
    boxes = torch.stack([x1, y1, x2, y2], 1)
    edge = torch.tensor(
        [
            [-3.0, -2.0, 5.0, img_h + 4.0],  # across the top-left and bottom border
            [img_w - 2.0, img_h - 1.0, img_w + 6.0, img_h + 3.0],  # mostly beyond the bottom-right
            [img_w + 10.0, 1.0, img_w + 20.0, 8.0],  # wholly outside: zeros
            [4.0, 4.0, 4.2, 4.1],  # tiny
            [0.0, 0.0, img_w, img_h],  # the whole image
        ]
    )
    boxes = torch.cat([boxes, edge])
    batch = torch.randint(0, n_images, (boxes.shape[0], 1), generator=g).float()
    return torch.cat([batch, boxes], 1)


@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("output_size", [(7, 7), (5, 3)])
def test_sparse_roi_align_equals_torchvision_outputs_and_gradients(sampling_ratio, aligned, output_size):
    torch.manual_seed(0)
    scale = 0.25
    features = torch.randn(3, 6, 13, 29)
    rois = _rois(3, 13, 29, scale, 40, seed=sampling_ratio)
    grad_out = torch.randn(rois.shape[0], 6, *output_size)
    ref_in = features.clone().requires_grad_()
    ref = roi_align(ref_in, rois, output_size, scale, sampling_ratio, aligned)
    ref.backward(grad_out)
    ours_in = features.clone().requires_grad_()
    ours = sparse_roi_align(ours_in, rois, output_size, scale, sampling_ratio, aligned)
    ours.backward(grad_out)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-5, atol=1e-5)
    assert ref_in.grad.abs().sum() > 0
    # The ROI wholly outside the map pools zeros, as torchvision's does.
    assert ours[-3].abs().max() == 0 and ref[-3].abs().max() == 0


def test_sparse_gradient_is_deterministic():
    features = torch.randn(2, 8, 16, 40)
    rois = _rois(2, 16, 40, 0.25, 300, seed=5)
    grads = []
    for _ in range(2):
        x = features.clone().requires_grad_()
        sparse_roi_align(x, rois, (7, 7), 0.25, 2, True).sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_module_uses_the_sparse_pass_only_where_a_feature_gradient_is_needed():
    features = torch.randn(2, 4, 10, 20)
    rois = _rois(2, 10, 20, 0.25, 12, seed=1)
    module = SparseROIAlign((7, 7), 0.25, 2, aligned=True)
    plain = ROIAlign((7, 7), 0.25, 2, aligned=True)
    with torch.no_grad():
        assert torch.equal(module(features, rois), plain(features, rois))
    assert torch.equal(module(features, rois), plain(features, rois))  # no requires_grad: torchvision
    x = features.clone().requires_grad_()
    assert torch.equal(module(x, rois), sparse_roi_align(x, rois, (7, 7), 0.25, 2, True))
    module.eval()  # eval mode (inference, export tracing): torchvision's op even with a gradient
    assert torch.equal(module(x, rois), plain(x, rois))
    module.train()
    # Adaptive sampling (ratio 0) and empty levels stay on torchvision's op.
    adaptive = SparseROIAlign((7, 7), 0.25, 0, aligned=True)
    assert torch.equal(adaptive(x, rois), ROIAlign((7, 7), 0.25, 0, aligned=True)(x, rois))
    assert module(x, rois[:0]).shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match="sampling_ratio"):
        sparse_roi_align(x, rois, (7, 7), 0.25, 0, True)


def _fpn_features_and_boxes(seed):
    """Features of 4 FPN levels (strides 4..32) for 3 images and boxes from tiny to image-sized."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(3, 5, 64 // s, 96 // s, generator=g) for s in (1, 2, 4, 8)]
    boxes = []
    for _ in range(3):
        xy = torch.rand(20, 2, generator=g) * 200
        wh = torch.rand(20, 2, generator=g) ** 3 * 350 + 2
        boxes.append(Boxes(torch.cat([xy, xy + wh], 1)))
    return features, boxes


@pytest.mark.parametrize("pooler_type", ["ROIAlignV2", "ROIAlign"])
def test_sparse_pooler_equals_detectron2_pooler_across_fpn_levels(pooler_type):
    features, boxes = _fpn_features_and_boxes(seed=3)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    ref = ROIPooler((7, 7), scales, 2, pooler_type)
    ours = use_sparse_training_pass(ROIPooler((7, 7), scales, 2, pooler_type))
    assert type(ours) is SparseROIPooler and all(type(level) is SparseROIAlign for level in ours.level_poolers)
    per_level = torch.bincount(assign_boxes_to_levels(boxes, 2, 5, 224, 4), minlength=4)
    assert (per_level > 0).sum() >= 3 and (per_level == 0).any()  # several levels hold ROIs, one is empty
    ref_in = [f.clone().requires_grad_() for f in features]
    ours_in = [f.clone().requires_grad_() for f in features]
    ref_out, ours_out = ref(ref_in, boxes), ours(ours_in, boxes)
    grad_out = torch.randn_like(ref_out)
    ref_out.backward(grad_out)
    ours_out.backward(grad_out)
    assert ours_out.shape == ref_out.shape == (60, 5, 7, 7)
    torch.testing.assert_close(ours_out, ref_out, rtol=1e-4, atol=5e-5)
    for level, (a, b) in enumerate(zip(ref_in, ours_in)):
        a_grad = torch.zeros_like(a) if a.grad is None else a.grad  # an empty level: no gradient (zero)
        b_grad = torch.zeros_like(b) if b.grad is None else b.grad
        torch.testing.assert_close(b_grad, a_grad, rtol=1e-4, atol=5e-5, msg=f"level {level}")
        assert (a_grad.abs().sum() > 0) == bool(per_level[level] > 0)
    # Eval mode and no-grad passes: detectron2's forward, bit for bit.
    with torch.no_grad():
        assert torch.equal(ours(ours_in, boxes), ref(ref_in, boxes))
    ours.eval()
    ref.eval()
    assert torch.equal(ours(ours_in, boxes), ref(ref_in, boxes))
    # No ROI at all: an empty output, as detectron2's.
    ours.train()
    empty = [Boxes(torch.zeros(0, 4)) for _ in range(3)]
    assert ours(ours_in, empty).shape == (0, 5, 7, 7)


def test_only_roialign_poolers_become_sparse():
    pool = ROIPooler((7, 7), [1 / 4, 1 / 8], 0, "ROIPool")
    assert use_sparse_training_pass(pool) is pool


def _step_losses_and_grads(cfg, batch, state):
    model = build_model(cfg)
    model.load_state_dict(state)
    model.train()
    torch.manual_seed(1)  # the ROI sampler draws at random: the same draws for both settings
    with EventStorage(0):
        losses = model(batch)
    sum(losses.values()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return model, {k: float(v.detach()) for k, v in losses.items()}, grads


@pytest.mark.slow
def test_a_training_step_through_the_sparse_pass_matches_torchvision(digit_root, tmp_path):
    register_digits(digit_root, "ra")
    opts = [*tiny_model_opts(tmp_path), "DATASETS.TRAIN", "('ra_train',)"]
    sparse_cfg = get_digit_cfg(CONFIG, opts)
    assert sparse_cfg.MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN == "sparse"  # the default
    tv_cfg = get_digit_cfg(CONFIG, [*opts, "MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN", "torchvision"])
    torch.manual_seed(0)
    np.random.seed(0)
    state = build_model(sparse_cfg).state_dict()
    mapper = DigitDatasetMapper(sparse_cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get("ra_train")[:4]]

    sparse_model, sparse_losses, sparse_grads = _step_losses_and_grads(sparse_cfg, batch, state)
    tv_model, tv_losses, tv_grads = _step_losses_and_grads(tv_cfg, batch, state)
    assert type(sparse_model.roi_heads.box_pooler) is SparseROIPooler
    assert type(tv_model.roi_heads.box_pooler) is ROIPooler
    levels = sparse_model.roi_heads.box_pooler.level_poolers
    assert all(type(level) is SparseROIAlign for level in levels)
    assert all(type(level) is ROIAlign for level in tv_model.roi_heads.box_pooler.level_poolers)
    assert sparse_losses == pytest.approx(tv_losses, rel=1e-4, abs=1e-6)
    assert sparse_grads.keys() == tv_grads.keys()
    # The backbone's gradients flow back through the pooler: they must agree too.
    for key in sparse_grads:
        torch.testing.assert_close(sparse_grads[key], tv_grads[key], rtol=1e-3, atol=1e-5, msg=key)
    assert any(k.startswith("backbone.bottom_up") and v.abs().sum() > 0 for k, v in sparse_grads.items())


def test_train_roi_align_setting_is_checked():
    with pytest.raises(ConfigError, match="MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN"):
        get_digit_cfg(CONFIG, ["MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN", "fast"])
