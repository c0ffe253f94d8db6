"""Soft-NMS (MODEL.ROI_HEADS.SOFT_NMS): keeps an overlapping second digit that hard NMS removes."""

import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from digit_detectron import get_digit_cfg
from digit_detectron.modeling.soft_nms import soft_nms

from conftest import REPO_ROOT, tiny_model_opts

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
# two "1"s side by side whose boxes overlap (IoU 0.6), and a "7" on top of the first
BOXES = torch.tensor([[10.0, 0.0, 30.0, 40.0], [15.0, 0.0, 35.0, 40.0], [10.0, 0.0, 30.0, 40.0]])


def test_soft_nms_decays_instead_of_removing():
    scores = torch.tensor([0.9, 0.8])
    keep, decayed = soft_nms(BOXES[:2], scores, sigma=0.5, score_thresh=0.05)
    iou = 15 * 40 / (25 * 40)
    assert keep.tolist() == [0, 1]
    assert decayed[0] == pytest.approx(0.9) and decayed[1] == pytest.approx(0.8 * math.exp(-(iou**2) / 0.5))
    keep, _ = soft_nms(BOXES[:2], scores, sigma=0.5, score_thresh=0.5)  # decayed below the threshold: gone
    assert keep.tolist() == [0]
    with pytest.raises(ValueError, match="SIGMA"):
        soft_nms(BOXES, torch.ones(3), sigma=0, score_thresh=0.1)


def _inference(sigma, tmp_path):
    opts = tiny_model_opts(tmp_path) + [
        "MODEL.ROI_HEADS.NMS_THRESH_TEST",
        "0.5",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.05",
    ]
    if sigma:
        opts += ["MODEL.ROI_HEADS.SOFT_NMS.ENABLED", "True", "MODEL.ROI_HEADS.SOFT_NMS.SIGMA", str(sigma)]
    model = build_model(get_digit_cfg(CONFIG, opts)).eval()
    predictor = model.roi_heads.box_predictor
    logits = torch.full((3, 11), -10.0)
    logits[0, 1], logits[1, 1], logits[2, 7] = 5.0, 4.0, 4.5  # classes 1, 1, 7
    deltas = torch.zeros(3, 40)  # the boxes are the proposals
    proposals = Instances((40, 60), proposal_boxes=Boxes(BOXES.clone()))
    results, _ = predictor.inference((logits, deltas), [proposals])
    return results[0]


def test_roi_heads_soft_nms_keeps_the_second_digit_hard_nms_drops(tmp_path):
    hard = _inference(0, tmp_path)
    soft = _inference(0.5, tmp_path)
    assert sorted(hard.pred_classes.tolist()) == [1, 7]  # the second "1" (IoU 0.6 > 0.5) is gone
    assert sorted(soft.pred_classes.tolist()) == [1, 1, 7]  # kept with a lower score; the "7" untouched
    ones = soft.scores[soft.pred_classes == 1].sort(descending=True).values
    assert ones[0] > ones[1] and float(ones[1]) < float(hard.scores[hard.pred_classes == 1][0])
    assert torch.allclose(soft.scores[soft.pred_classes == 7], hard.scores[hard.pred_classes == 7])
