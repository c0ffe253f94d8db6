"""Test-time augmentation and ensembles (inference/tta.py) on constructed detections and a tiny model."""

import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from digit_detectron import get_digit_cfg
from digit_detectron.inference.predictor import DigitPredictor
from digit_detectron.inference.tta import MergedModel, merge_detections, weighted_box_fusion

from conftest import REPO_ROOT, draw_digits, tiny_model_opts

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")


def _instances(boxes, scores, classes):
    result = Instances((40, 100))
    result.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    result.scores = torch.tensor(scores)
    result.pred_classes = torch.tensor(classes)
    return result


def test_weighted_box_fusion_averages_what_the_runs_agree_on():
    run_a = _instances([[10, 0, 30, 40], [60, 0, 80, 40]], [0.9, 0.4], [1, 3])
    run_b = _instances([[12, 0, 32, 40]], [0.6], [1])
    merged = merge_detections([run_a, run_b], "wbf", 0.55)
    assert merged.pred_classes.tolist() == [1, 3]
    # the "1": one box, the score-weighted mean of both runs', with their mean score
    expected = (0.9 * torch.tensor([10.0, 0, 30, 40]) + 0.6 * torch.tensor([12.0, 0, 32, 40])) / 1.5
    assert torch.allclose(merged.pred_boxes.tensor[0], expected)
    assert float(merged.scores[0]) == pytest.approx(0.75)
    # the "3" only one run of two found: half its score
    assert float(merged.scores[1]) == pytest.approx(0.2)
    # hard NMS over both runs keeps the best "1" as it is
    nms = merge_detections([run_a, run_b], "nms", 0.55)
    assert nms.pred_classes.tolist() == [1, 3] and nms.pred_boxes.tensor[0].tolist() == [10, 0, 30, 40]
    # other classes never fuse
    boxes, scores, classes = weighted_box_fusion(
        torch.tensor([[10.0, 0, 30, 40], [10.0, 0, 30, 40]]), torch.tensor([0.9, 0.8]), torch.tensor([1, 7]), 0.55, 1
    )
    assert sorted(classes.tolist()) == [1, 7] and torch.allclose(scores.sort().values, torch.tensor([0.8, 0.9]))
    with pytest.raises(ValueError, match="DIGITS.TTA.MERGE"):
        merge_detections([run_a], "mean", 0.5)


@pytest.mark.slow
def test_one_scale_one_model_is_the_model_and_more_scales_run(tmp_path):
    torch.manual_seed(0)
    cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path) + ["DIGITS.INFERENCE.BACKBONE_BF16", "off"])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, str(tmp_path)).save("m")
    image, _ = draw_digits(np.random.default_rng(0), [1, 2, 3], height=40)
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, image)
    opts = tiny_model_opts(tmp_path) + [
        "MODEL.WEIGHTS",
        str(tmp_path / "m.pth"),
        "DIGITS.INFERENCE.BACKBONE_BF16",
        "off",
    ]
    plain = DigitPredictor(get_digit_cfg(CONFIG, opts)).predict_files([path], progress=False).instances[path]
    one = DigitPredictor(get_digit_cfg(CONFIG, opts + ["DIGITS.TTA.ENABLED", "True"]))
    assert isinstance(one.model, MergedModel)
    single = one.predict_files([path], progress=False).instances[path]
    assert torch.allclose(single.pred_boxes.tensor, plain.pred_boxes.tensor)
    assert torch.allclose(single.scores, plain.scores)
    multi_opts = ["DIGITS.TTA.ENABLED", "True", "DIGITS.TTA.SCALES", "(48, 64, 80)"]
    multi_opts += ["DIGITS.TTA.ENSEMBLE_WEIGHTS", f"('{tmp_path / 'm.pth'}',)"]
    multi = DigitPredictor(get_digit_cfg(CONFIG, opts + multi_opts))
    assert len(multi.model.models) == 2 and multi.model.scales == [48, 64, 80]
    result = multi.predict_files([path], progress=False).instances[path]
    assert result.image_size == image.shape[:2] and len(result) > 0
    h, w = image.shape[:2]
    assert float(result.pred_boxes.tensor[:, 2].max()) <= w and float(result.pred_boxes.tensor[:, 3].max()) <= h
