"""MODEL.ROI_HEADS.FOREGROUND_SCORE: a box torn between two digits still reads as a digit."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from digit_detectron import get_digit_cfg
from digit_detectron.modeling import credit_foreground
from digit_detectron.modeling.number_reader import NumberReader

from conftest import REPO_ROOT, tiny_model_opts

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
# a sure "4" on the left; on the right a box that is surely a digit, unsure which ("1" or "7")
BOXES = torch.tensor([[2.0, 4.0, 14.0, 36.0], [20.0, 4.0, 30.0, 36.0]])


def test_credit_foreground_gives_the_best_digit_the_foreground_probability():
    probs = torch.tensor(
        [
            [0.0] * 4 + [0.9] + [0.0] * 5 + [0.1],  # a sure "4"
            [0.0, 0.45, 0.0, 0.0, 0.0, 0.0, 0.0, 0.40, 0.0, 0.0, 0.15],  # "1" or "7"
            [0.1] * 10 + [0.0],  # a tie: the first of the tied digits is credited
        ]
    )
    out = credit_foreground(probs)
    assert out[0, 4] == pytest.approx(0.9) and out[1, 1] == pytest.approx(0.85) and out[1, 7] == pytest.approx(0.40)
    assert out[2, 0] == pytest.approx(1.0) and torch.allclose(out[2, 1:10], torch.full((9,), 0.1))
    untouched = torch.ones_like(probs, dtype=torch.bool)
    untouched[[0, 1, 2], [4, 1, 0]] = False
    assert torch.equal(out[untouched], probs[untouched])  # only the best digit of each row changes
    assert credit_foreground(torch.zeros(0, 11)).shape == (0, 11)


def _detections(tmp_path, foreground):
    opts = tiny_model_opts(tmp_path) + ["MODEL.ROI_HEADS.FOREGROUND_SCORE", str(foreground)]
    model = build_model(get_digit_cfg(CONFIG, opts)).eval()
    logits = torch.full((2, 11), -10.0)
    logits[0, 4], logits[0, 10] = 5.0, 2.8  # p("4") ~ 0.9
    logits[1, 1], logits[1, 7], logits[1, 10] = 5.0, 4.88, 3.9  # ~0.45 / 0.40 / 0.15
    deltas = torch.zeros(2, 40)  # the boxes are the proposals
    proposals = Instances((40, 40), proposal_boxes=Boxes(BOXES.clone()))
    results, _ = model.roi_heads.box_predictor.inference((logits, deltas), [proposals])
    return results[0]


def test_foreground_score_lets_the_reader_keep_an_unsure_digit(tmp_path):
    plain, credited = _detections(tmp_path, False), _detections(tmp_path, True)
    reader = NumberReader((0.5,), 0.3, 6)
    assert reader.read_instances(plain) == 4  # the unsure digit scores 0.45 < 0.5: missed
    assert reader.read_instances(credited) == 41
    best = credited.scores[(credited.pred_classes == 1)]
    assert float(best.max()) == pytest.approx(0.85, abs=0.01)
    # the runner-up digit and the sure digit keep their scores
    for digit in (4, 7):
        mine, theirs = credited.scores[credited.pred_classes == digit], plain.scores[plain.pred_classes == digit]
        assert torch.allclose(mine, theirs)
